/*
 * Intrusive doubly-linked lists threaded through an element's own two
 * pointer fields (named by the caller, as <sys/queue.h> does): the
 * extents' LRU and id-order lists (extent_store.c), a namespace's extents
 * (extent_order.c), a connection's IPC exports (ipc_registry.c), the
 * clients (server.c, listener.c). `head` and `tail` are lvalues holding the
 * list's first and last element (NULL: empty); lists that keep no tail use
 * the _FRONT/plain forms. The element is never NULL and is evaluated more
 * than once: pass a variable.
 */
#pragma once

#include <stddef.h>
#include <stdlib.h>

/* Insert `node` first. */
#define SAGE_LIST_PUSH_FRONT(head, node, prev, next) \
        do {                                         \
                (node)->prev = NULL;                 \
                (node)->next = (head);               \
                if (head)                            \
                        (head)->prev = (node);       \
                (head) = (node);                     \
        } while (0)

/* Insert `node` last. */
#define SAGE_LIST_APPEND(head, tail, node, prev, next) \
        do {                                           \
                (node)->next = NULL;                   \
                (node)->prev = (tail);                 \
                if (tail)                              \
                        (tail)->next = (node);         \
                else                                   \
                        (head) = (node);               \
                (tail) = (node);                       \
        } while (0)

/* Take `node` out of a list without a tail (its own pointers keep their values). */
#define SAGE_LIST_UNLINK(head, node, prev, next)           \
        do {                                               \
                if ((node)->prev)                          \
                        (node)->prev->next = (node)->next; \
                else                                       \
                        (head) = (node)->next;             \
                if ((node)->next)                          \
                        (node)->next->prev = (node)->prev; \
        } while (0)

/* Take `node` out of a list with a tail. */
#define SAGE_LIST_UNLINK_TAIL(head, tail, node, prev, next) \
        do {                                                \
                SAGE_LIST_UNLINK(head, node, prev, next);   \
                if (!(node)->next)                          \
                        (tail) = (node)->prev;              \
        } while (0)

/*
 * Free every element of a hash table's buckets: `n` singly linked chains
 * through the element's field `next` (extent_store.c's namespaces,
 * extent_order.c's, tally.c's tallies); the buckets end empty.
 */
#define SAGE_BUCKETS_FREE(buckets, n, next)                                             \
        do {                                                                            \
                for (size_t bucket_ = 0; bucket_ < (n); bucket_++)                      \
                        while ((buckets)[bucket_]) {                                    \
                                __typeof__((buckets)[0]) element_ = (buckets)[bucket_]; \
                                (buckets)[bucket_] = element_->next;                    \
                                free(element_);                                         \
                        }                                                               \
        } while (0)
