/* libsage's helper threads (spawn.c). */
#pragma once

/*
 * Start main_fn(arg) on a detached thread that takes none of the app's
 * signals (all blocked in it), named `name` (NULL: unnamed). 0, or -1 with
 * errno set.
 */
int sage_spawn_thread(void *(*main_fn)(void *), void *arg, const char *name);
