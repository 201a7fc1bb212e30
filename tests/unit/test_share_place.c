/*
 * Learned placement's hints (intercept/share_place.c): ordinals per size,
 * leads learned, saved and found again by the same program, and a hint
 * file that lies (unaligned, too large, not numbers) never placing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../intercept/share_place.h"
#include "check.h"

#define G ((size_t)2 << 20)

static void learn_save_find(const char *dir) {
        SharePlace p = { 0 };
        uint32_t ord;
        size_t lead;

        share_place_open(&p, dir);
        CHECK(p.path && p.nhint == 0);
        CHECK(share_place_next(&p, 20 * G, G, &ord) == 0 && ord == 0);
        CHECK(share_place_next(&p, G, G, &ord) == 0 && ord == 0);
        CHECK(share_place_next(&p, 20 * G, G, &ord) == 0 && ord == 1);
        CHECK(share_place_lead_for(G + 425984, G, &lead) && lead == G - 425984);
        CHECK(share_place_lead_for(3 * G, G, &lead) && lead == 0);
        CHECK(!share_place_lead_for(G + 100, G, &lead)); /* the app's pointers would lose their alignment */
        share_place_learn(&p, 20 * G, 1, G - 425984);
        share_place_learn(&p, G, 0, 88576);
        CHECK(p.dirty && share_place_save(&p) == 0 && !p.dirty);
        share_place_close(&p);

        share_place_open(&p, dir);
        CHECK(p.nhint == 2);
        CHECK(share_place_next(&p, 20 * G, G, &ord) == 0 && ord == 0);
        CHECK(share_place_next(&p, 20 * G, G, &ord) == G - 425984 && ord == 1);
        CHECK(share_place_next(&p, G, G, &ord) == 88576);
        CHECK(share_place_next(&p, G, 64 * 1024, &ord) == 0); /* a lead must stay below the granule */
        share_place_close(&p);
}

static void lying_file(const char *dir) {
        SharePlace p = { 0 };
        uint32_t ord;
        FILE *f;

        share_place_open(&p, dir); /* the same program: the file just written */
        f = fopen(p.path, "w");
        CHECK(f);
        fprintf(f, "2097152 0 999\n2097152 1 4294967295\n0 0 512\n4194304 0 512\nx y z\n4194304 1 512\n");
        CHECK(fclose(f) == 0);
        share_place_close(&p);
        share_place_open(&p, dir);
        CHECK(p.nhint == 1); /* the valid line before the garbage; nothing after it */
        CHECK(share_place_next(&p, G, G, &ord) == 0 && ord == 0);     /* 999: not a multiple of 512 */
        CHECK(share_place_next(&p, G, G, &ord) == 0 && ord == 1);     /* past a granule */
        CHECK(share_place_next(&p, 2 * G, G, &ord) == 512);           /* the one valid hint */
        CHECK(share_place_next(&p, 2 * G, G, &ord) == 0 && ord == 1); /* after the garbage: not read */
        share_place_close(&p);

        share_place_open(&p, ""); /* off */
        CHECK(!p.path && share_place_next(&p, 2 * G, G, &ord) == 0 && share_place_save(&p) == 0);
        share_place_open(&p, "/nonexistent/dir");
        share_place_learn(&p, 2 * G, 0, 512);
        CHECK(share_place_save(&p) < 0); /* cannot write: the app goes on */
        share_place_close(&p);
}

/* A link where the new file is to go (a folder others may write): not followed, nothing written through it. */
static void link_not_followed(const char *dir) {
        SharePlace p = { 0 };
        char tmp[4096], target[4096], line[16] = "";
        FILE *f;

        share_place_open(&p, dir);
        snprintf(tmp, sizeof(tmp), "%s.%ld", p.path, (long)getpid());
        snprintf(target, sizeof(target), "%s/target", dir);
        CHECK((f = fopen(target, "w")) && fputs("mine\n", f) >= 0 && fclose(f) == 0);
        CHECK(symlink(target, tmp) == 0);
        share_place_learn(&p, 2 * G, 7, 1024);
        CHECK(share_place_save(&p) < 0);
        CHECK((f = fopen(target, "r")) && fgets(line, sizeof(line), f) && !strcmp(line, "mine\n") && fclose(f) == 0);
        CHECK(unlink(tmp) == 0 && unlink(target) == 0);
        share_place_close(&p);
}

int main(void) {
        char dir[] = "/tmp/sage-place-XXXXXX";
        SharePlace p = { 0 };

        CHECK(mkdtemp(dir));
        learn_save_find(dir);
        lying_file(dir);
        link_not_followed(dir);
        share_place_open(&p, dir);
        unlink(p.path);
        share_place_close(&p);
        CHECK(rmdir(dir) == 0);
        return 0;
}
