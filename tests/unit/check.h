/* The unit tests' assertion: a failed check names itself and aborts. */
#pragma once

#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                              \
        do {                                                                                     \
                if (!(cond)) {                                                                   \
                        fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
                        abort();                                                                 \
                }                                                                                \
        } while (0)
