"""What the deploy checks (check_dockerfile.py, check_manifests.py) share:
each checks the real files, then proves itself on broken variants of them
(its MUTATIONS, every one of which must be reported), and says one verdict."""


def missed_mutations(mutations, caught):
    """The names of the mutations caught(mutate) is false for, each on a FAIL line."""
    missed = [name for name, mutate in mutations.items() if not caught(mutate)]
    for name in missed:
        print(f"FAIL: self-test: the mutation '{name}' went unreported")
    return missed


def verdict(problems, missed, ok):
    """1 when anything failed (already said), else prints `ok` and 0."""
    if problems or missed:
        return 1
    print(ok)
    return 0
