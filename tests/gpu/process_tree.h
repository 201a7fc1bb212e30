/*
 * The process tree of the GPU suite's fork_exec.cu and of its twin on the
 * simulated driver, tests/integration/fork_tree.c: one copy, so the CPU test
 * runs the very tree the GPU row runs. C and C++ (nvcc) alike.
 *
 * A CUDA parent that starts CUDA children, the shape of a serving process
 * that initialises the GPU and then spawns workers. The preload is inherited
 * by every process of the tree, so each must work on its own:
 *   1. the parent does its work (`work("parent", 3)`);
 *   2. a child through fork + execv of this program (--child NAME K);
 *   3. a child through posix_spawn of `sh -c '"$0" --child NAME K && echo
 *      shell: ok'`: glibc's posix_spawn is a CLONE_VFORK that runs no atfork
 *      handler, and the shell stays between the two (the trailing echo keeps
 *      it from exec'ing the program in its place) with the preload loaded and
 *      no driver call of its own;
 *   4. a child forked without exec that touches no CUDA and leaves by
 *      exit(): it runs the atexit handlers it inherited;
 *   5. the parent again: its context still works after its children.
 * The parent waits for each child, so stdout's order is fixed; a child that
 * fails fails the parent (exit 5).
 */
#ifndef SAGE_PROCESS_TREE_H
#define SAGE_PROCESS_TREE_H

#include <errno.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef __cplusplus
extern "C" {
#endif
extern char **environ;
#ifdef __cplusplus
}
#endif

/* One process's GPU work, printed as one line that starts with `who`. */
typedef void (*TreeWork)(const char *who, unsigned long long k);

static void tree_wait(pid_t pid, const char *what) {
        int status = 0;

        if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                fprintf(stderr, "process tree: the %s ended with status 0x%x (%s)\n", what, status, strerror(errno));
                exit(5);
        }
}

/* main() of both programs: `start` readies CUDA in each process that works (NULL: nothing to do). */
static int process_tree_main(int argc, char **argv, void (*start)(void), TreeWork work) {
        char self[PATH_MAX];
        pid_t pid;
        int err;

        if (argc == 4 && !strcmp(argv[1], "--child")) {
                if (start)
                        start();
                work(argv[2], strtoull(argv[3], NULL, 10));
                return 0;
        }
        /* The path the children exec: $0 inside `sh -c` must name this program, not /proc/self/exe. */
        if (argc != 1 || !realpath("/proc/self/exe", self)) {
                fprintf(stderr, "usage: %s [--child NAME K]\n", argv[0]);
                return 2;
        }
        if (start)
                start();
        work("parent", 3);

        fflush(stdout);
        if ((pid = fork()) == 0) {
                char *args[] = { self, (char *)"--child", (char *)"exec-child", (char *)"5", NULL };
                execv(self, args);
                _exit(127);
        }
        tree_wait(pid, "fork+exec child");

        char *sh_args[] = { (char *)"sh", (char *)"-c", (char *)"\"$0\" --child shell-child 9 && echo shell: ok", self,
                            NULL };
        if ((err = posix_spawn(&pid, "/bin/sh", NULL, NULL, sh_args, environ)) != 0) {
                fprintf(stderr, "process tree: posix_spawn /bin/sh: %s\n", strerror(err));
                return 5;
        }
        tree_wait(pid, "sh -c child");

        if ((pid = fork()) == 0) {
                printf("fork-child: no CUDA, exit(0)\n");
                fflush(stdout);
                exit(0);
        }
        tree_wait(pid, "fork child without exec");

        work("parent-after", 11);
        return 0;
}

#endif /* SAGE_PROCESS_TREE_H */
