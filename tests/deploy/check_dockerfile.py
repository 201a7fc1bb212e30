#!/usr/bin/env python3
"""Check deploy/container/Dockerfile without building it (no network here,
and hadolint is not packaged): instruction syntax, stages and their
references, ARGs used before they are declared, COPY sources in the build
context, exec-form JSON, hadolint's apt/pip rules (DL3008-style pins
aside), and that every program the image's ENTRYPOINT, HEALTHCHECK and
the Kubernetes DaemonSet run is one `meson install` puts there (prefix
/usr). Then it checks itself on broken variants (MUTATIONS).

    check_dockerfile.py SOURCE_ROOT BUILD_DIR
"""
import glob
import json
import os
import re
import subprocess
import sys

from deploy_check import missed_mutations, verdict

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}


def logical_lines(text):
    """(line number, instruction, rest) of every instruction, continuations joined."""
    out, buf, start = [], "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comments inside a continued instruction are dropped by the parser too
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((start, word, rest.strip()))
        buf = ""
    if buf:
        out.append((start, "<unterminated>", buf))
    return out


def check(text, root, installed):
    problems = []
    bad = lambda n, what: problems.append(f"Dockerfile:{n}: {what}")  # noqa: E731
    lines = logical_lines(text)
    args, stages, seen_from = set(), [], False
    for n, word, rest in lines:
        if word not in INSTRUCTIONS:
            bad(n, f"unknown instruction {word!r}")
            continue
        if word != word.upper():
            bad(n, f"{word}: instructions are upper case")
        if not seen_from and word not in ("ARG", "FROM"):
            bad(n, f"{word} before the first FROM")
        for var in re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", rest) if word == "FROM" else []:
            if var not in args:
                bad(n, f"FROM uses ${var}, never declared by an ARG before it")
        if word == "ARG":
            args.add(rest.split("=")[0])
        elif word == "FROM":
            seen_from = True
            m = re.match(r"^(--platform=\S+\s+)?(\S+)(\s+AS\s+([a-z][a-z0-9_.-]*))?$", rest, re.I)
            if not m:
                bad(n, f"FROM {rest!r}: expected IMAGE [AS name]")
                continue
            if m.group(2).endswith(":latest") or (":" not in m.group(2) and "$" not in m.group(2) and "@" not in m.group(2)):
                bad(n, f"FROM {m.group(2)}: pin a tag (hadolint DL3006/DL3007)")
            if m.group(4):
                if m.group(4) in stages:
                    bad(n, f"stage {m.group(4)} twice")
                stages.append(m.group(4))
        elif word in ("COPY", "ADD"):
            parts = rest.split()
            opts = [p for p in parts if p.startswith("--")]
            paths = [p for p in parts if not p.startswith("--")]
            src_stage = next((o.split("=", 1)[1] for o in opts if o.startswith("--from=")), None)
            if len(paths) < 2:
                bad(n, f"{word} needs a source and a destination")
            elif src_stage is not None:
                if src_stage not in stages:
                    bad(n, f"COPY --from={src_stage}: no earlier stage of that name")
            else:
                for src in paths[:-1]:
                    if not glob.glob(os.path.join(root, src)):
                        bad(n, f"{word} {src}: not in the build context")
            if word == "ADD":
                bad(n, "ADD: use COPY (hadolint DL3020)")
        elif word in ("CMD", "ENTRYPOINT") or (word == "HEALTHCHECK" and " CMD " in f" {rest} "):
            form = re.sub(r"^(--\S+\s+)*CMD\s+", "", rest).strip() if word == "HEALTHCHECK" else rest
            try:
                argv = json.loads(form)
                if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
                    raise ValueError
            except ValueError:
                bad(n, f"{word}: exec form must be a JSON array of strings (hadolint DL3025), got {form!r}")
                continue
            if argv[0].startswith("/") and argv[0] not in installed:
                bad(n, f"{word} runs {argv[0]}, which meson install does not put in the image")
        elif word == "RUN":
            if "apt-get install" in rest:
                if "--no-install-recommends" not in rest:
                    bad(n, "apt-get install without --no-install-recommends (hadolint DL3015)")
                if "apt-get update" not in rest or "rm -rf /var/lib/apt/lists/*" not in rest:
                    bad(n, "apt-get install: update and remove the lists in the same RUN (hadolint DL3009)")
                if " -y" not in rest:
                    bad(n, "apt-get install without -y (hadolint DL3014)")
            if re.search(r"\bpip3? install\b", rest) and "--no-cache-dir" not in rest:
                bad(n, "pip install without --no-cache-dir (hadolint DL3042)")
            if re.search(r"(^|&&|;)\s*cd\s", rest):
                bad(n, "cd in RUN: use WORKDIR (hadolint DL3003)")
        elif word == "WORKDIR" and not rest.startswith("/"):
            bad(n, "WORKDIR must be absolute (hadolint DL3000)")
    if lines and lines[-1][1] == "<unterminated>":
        bad(lines[-1][0], "a continued line never ends")
    if not stages or len([w for _, w, _ in lines if w == "FROM"]) < 2:
        problems.append("Dockerfile: not a multi-stage build")
    return problems


def installed_paths(build):
    """What `meson install` puts where, with the image's prefix /usr."""
    opts = json.loads(subprocess.check_output(["meson", "introspect", build, "--buildoptions"]))
    prefix = next(o["value"] for o in opts if o["name"] == "prefix")
    dests = json.loads(subprocess.check_output(["meson", "introspect", build, "--installed"])).values()
    return {"/usr" + d[len(prefix):] if d.startswith(prefix + "/") else d for d in dests}


def daemonset_programs(root):
    text = open(os.path.join(root, "deploy/kubernetes/daemonset.yaml")).read()
    return set(re.findall(r'"(/usr/s?bin/[a-z-]+)"', text))


MUTATIONS = {
    "unknown instruction": lambda t: t.replace("WORKDIR /src", "WORKDIRR /src"),
    "COPY from a missing stage": lambda t: t.replace("COPY --from=build", "COPY --from=builder"),
    "ENTRYPOINT not JSON": lambda t: t.replace('ENTRYPOINT ["/usr/sbin/saged",', 'ENTRYPOINT ["/usr/sbin/saged"'),
    "ENTRYPOINT of a program not installed": lambda t: t.replace('ENTRYPOINT ["/usr/sbin/saged"', 'ENTRYPOINT ["/usr/bin/saged"'),
    "apt lists kept": lambda t: t.replace(" \\\n && rm -rf /var/lib/apt/lists/*", ""),
    "ARG after use": lambda t: t.replace("ARG CUDA_DEVEL_IMAGE=", "ARG CUDA_DEVEL=", 1),
    "single stage": lambda t: re.sub(r"(?s)FROM \$\{RUNTIME_IMAGE\}.*", "", t),
    "source outside the context": lambda t: t.replace("COPY . /src", "COPY nonexistent /src"),
    "unterminated line": lambda t: t.rstrip("\n") + " \\\n",
}


def main():
    root, build = sys.argv[1], sys.argv[2]
    text = open(os.path.join(root, "deploy/container/Dockerfile")).read()
    installed = installed_paths(build)
    problems = check(text, root, installed)
    for prog in sorted(daemonset_programs(root) - installed - {"/bin/sh"}):
        problems.append(f"deploy/kubernetes/daemonset.yaml runs {prog}, which the image does not have")
    for p in problems:
        print("FAIL:", p)
    missed = missed_mutations(MUTATIONS, lambda mutate: check(mutate(text), root, installed))
    # The mutations must change the text, or they test nothing.
    for name, mutate in MUTATIONS.items():
        if mutate(text) == text:
            print(f"FAIL: self-test: the mutation '{name}' no longer applies")
            missed.append(name)
    hadolint = subprocess.run(["sh", "-c", "command -v hadolint"], capture_output=True, text=True).stdout.strip()
    if hadolint:
        r = subprocess.run([hadolint, os.path.join(root, "deploy/container/Dockerfile")])
        if r.returncode:
            problems.append("hadolint")
    else:
        print("SKIP part: hadolint not installed; the checks above stand in for it")
    return verdict(problems, missed, f"Dockerfile ok; {len(MUTATIONS)} broken variants all caught")


if __name__ == "__main__":
    sys.exit(main())
