/* Unit test of common/hash: XXH3-128 wrapper, formatting and parsing. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hash.h"

int main(void) {
        static unsigned char big[1 << 20];
        char text[33];
        SageHash a, b, parsed;

        for (size_t i = 0; i < sizeof(big); i++)
                big[i] = (unsigned char)(i * 131 + 7);
        a = sage_hash(big, sizeof(big));
        b = sage_hash(big, sizeof(big));
        assert(sage_hash_equal(a, b));
        big[sizeof(big) / 2] ^= 1;
        b = sage_hash(big, sizeof(big));
        assert(!sage_hash_equal(a, b));
        /* Size is part of the content. */
        assert(!sage_hash_equal(sage_hash(big, 10), sage_hash(big, 11)));
        /* The empty input has XXH3-128's published value. */
        a = sage_hash("", 0);
        sage_hash_format(a, text);
        assert(strcmp(text, "99aa06d3014798d86001c324468d497f") == 0);
        assert(sage_hash_parse(text, &parsed) == 0 && sage_hash_equal(parsed, a));
        assert(sage_hash_parse("xyz", &parsed) < 0);
        assert(sage_hash_parse("99aa06d3014798d86001c324468d497f0", &parsed) < 0);
        /* The content key: chunk hashes, then their hash (a short last chunk included). */
        {
                size_t size = 2 * SAGE_CONTENT_KEY_CHUNK + 4096;
                unsigned char *data = malloc(size);
                SageHash chunks[3];
                assert(data);
                for (size_t i = 0; i < size; i++)
                        data[i] = (unsigned char)(i * 7 + (i >> 12));
                chunks[0] = sage_hash(data, SAGE_CONTENT_KEY_CHUNK);
                chunks[1] = sage_hash(data + SAGE_CONTENT_KEY_CHUNK, SAGE_CONTENT_KEY_CHUNK);
                chunks[2] = sage_hash(data + 2 * SAGE_CONTENT_KEY_CHUNK, 4096);
                a = sage_content_key(data, size);
                assert(sage_hash_equal(a, sage_content_key_combine(chunks, 3)));
                assert(sage_hash_equal(a, sage_hash(chunks, sizeof(chunks))));
                assert(!sage_hash_equal(a, sage_hash(data, size)));
                free(data);
        }
        /* Copy and hash in one pass: the bytes copied and their one-shot hash, any length. */
        {
                static unsigned char dst[(1 << 20) + 3];
                memset(dst, 0, sizeof(dst));
                a = sage_hash_copy(dst, big, sizeof(big));
                assert(memcmp(dst, big, sizeof(big)) == 0 && sage_hash_equal(a, sage_hash(big, sizeof(big))));
                a = sage_hash_copy(dst, big + 1, (256 << 10) + 3);
                assert(sage_hash_equal(a, sage_hash(big + 1, (256 << 10) + 3)));
                assert(sage_hash_equal(sage_hash_copy(dst, big, 0), sage_hash("", 0)));
        }
        puts("hash: ok");
        return 0;
}
