/*
 * dlsym (and dlopen) interposition, in assembly for one reason: glibc's dlsym finds the
 * caller's object from its return address (RTLD_NEXT, and the namespace of
 * RTLD_DEFAULT lookups). After asking sage_dlsym_route whether to substitute
 * a driver symbol, the trampoline *jumps* into glibc's dlsym with the
 * caller's frame untouched, so for every name SAGE does not substitute the
 * lookup behaves exactly as if libsage were not there. A C forwarder would
 * rely on a tail call the compiler may not make (-O0, sanitizers).
 *
 * Two entry points carry the two symbol versions of dlsym that glibc has
 * exported (GLIBC_2.2.5 from libdl, GLIBC_2.34 from libc).
 */
#if defined(__x86_64__)

        .text

        .globl  sage_dlsym_v234
        .hidden sage_dlsym_v234
        .type   sage_dlsym_v234, @function
sage_dlsym_v234:
        .cfi_startproc
        pushq   %rdi
        .cfi_adjust_cfa_offset 8
        pushq   %rsi
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        call    sage_dlsym_route
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %rsi
        .cfi_adjust_cfa_offset -8
        popq    %rdi
        .cfi_adjust_cfa_offset -8
        testq   %rax, %rax
        jnz     1f
        jmp     *sage_real_dlsym_v234(%rip)
1:      ret
        .cfi_endproc
        .size   sage_dlsym_v234, .-sage_dlsym_v234

        .globl  sage_dlsym_v225
        .hidden sage_dlsym_v225
        .type   sage_dlsym_v225, @function
sage_dlsym_v225:
        .cfi_startproc
        pushq   %rdi
        .cfi_adjust_cfa_offset 8
        pushq   %rsi
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        call    sage_dlsym_route
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %rsi
        .cfi_adjust_cfa_offset -8
        popq    %rdi
        .cfi_adjust_cfa_offset -8
        testq   %rax, %rax
        jnz     1f
        jmp     *sage_real_dlsym_v225(%rip)
1:      ret
        .cfi_endproc
        .size   sage_dlsym_v225, .-sage_dlsym_v225

/*
 * dlopen, for the same reason: glibc finds the caller's object from the
 * return address (its RUNPATH and $ORIGIN for the search, its namespace),
 * and frameworks dlopen their CUDA libraries through their own RUNPATH.
 * sage_dlopen_note only looks at the name (eager warm-up, warmup.c); the
 * trampoline then jumps into glibc's dlopen with the caller's frame.
 */
        .globl  sage_dlopen_v234
        .hidden sage_dlopen_v234
        .type   sage_dlopen_v234, @function
sage_dlopen_v234:
        .cfi_startproc
        pushq   %rdi
        .cfi_adjust_cfa_offset 8
        pushq   %rsi
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        call    sage_dlopen_note
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %rsi
        .cfi_adjust_cfa_offset -8
        popq    %rdi
        .cfi_adjust_cfa_offset -8
        jmp     *sage_real_dlopen_v234(%rip)
        .cfi_endproc
        .size   sage_dlopen_v234, .-sage_dlopen_v234

        .globl  sage_dlopen_v225
        .hidden sage_dlopen_v225
        .type   sage_dlopen_v225, @function
sage_dlopen_v225:
        .cfi_startproc
        pushq   %rdi
        .cfi_adjust_cfa_offset 8
        pushq   %rsi
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        call    sage_dlopen_note
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %rsi
        .cfi_adjust_cfa_offset -8
        popq    %rdi
        .cfi_adjust_cfa_offset -8
        jmp     *sage_real_dlopen_v225(%rip)
        .cfi_endproc
        .size   sage_dlopen_v225, .-sage_dlopen_v225

        /* The exported, versioned names. */
        .globl  sage_dlsym_export_v234
        .set    sage_dlsym_export_v234, sage_dlsym_v234
        .symver sage_dlsym_export_v234, dlsym@@GLIBC_2.34
        .globl  sage_dlsym_export_v225
        .set    sage_dlsym_export_v225, sage_dlsym_v225
        .symver sage_dlsym_export_v225, dlsym@GLIBC_2.2.5
        .globl  sage_dlopen_export_v234
        .set    sage_dlopen_export_v234, sage_dlopen_v234
        .symver sage_dlopen_export_v234, dlopen@@GLIBC_2.34
        .globl  sage_dlopen_export_v225
        .set    sage_dlopen_export_v225, sage_dlopen_v225
        .symver sage_dlopen_export_v225, dlopen@GLIBC_2.2.5

#else
#error "dlsym_trampoline.S supports x86-64 only; other architectures use dlsym_fallback.c"
#endif

        .section .note.GNU-stack,"",@progbits
