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

/*
 * One trampoline: calls \hook with the caller's arguments (rdi, rsi saved
 * around it, the stack 16-byte aligned at the call), then jumps to the real
 * function through \real. With \substitutes, a non-NULL answer of \hook is
 * returned instead (dlsym's substitution).
 */
        .macro  TRAMPOLINE name, hook, real, substitutes
        .globl  \name
        .hidden \name
        .type   \name, @function
\name:
        .cfi_startproc
        pushq   %rdi
        .cfi_adjust_cfa_offset 8
        pushq   %rsi
        .cfi_adjust_cfa_offset 8
        subq    $8, %rsp
        .cfi_adjust_cfa_offset 8
        call    \hook
        addq    $8, %rsp
        .cfi_adjust_cfa_offset -8
        popq    %rsi
        .cfi_adjust_cfa_offset -8
        popq    %rdi
        .cfi_adjust_cfa_offset -8
        .if \substitutes
        testq   %rax, %rax
        jnz     1f
        jmp     *\real(%rip)
1:      ret
        .else
        jmp     *\real(%rip)
        .endif
        .cfi_endproc
        .size   \name, .-\name
        .endm

/* An exported name of a trampoline, with its glibc symbol version. */
        .macro  EXPORT name, trampoline, version
        .globl  \name
        .set    \name, \trampoline
        .symver \name, \version
        .endm

        TRAMPOLINE sage_dlsym_v234, sage_dlsym_route, sage_real_dlsym_v234, 1
        TRAMPOLINE sage_dlsym_v225, sage_dlsym_route, sage_real_dlsym_v225, 1

/*
 * dlopen, for the same reason: glibc finds the caller's object from the
 * return address (its RUNPATH and $ORIGIN for the search, its namespace),
 * and frameworks dlopen their CUDA libraries through their own RUNPATH.
 * sage_dlopen_note only looks at the name (eager warm-up, warmup.c); the
 * trampoline then jumps into glibc's dlopen with the caller's frame.
 */
        TRAMPOLINE sage_dlopen_v234, sage_dlopen_note, sage_real_dlopen_v234, 0
        TRAMPOLINE sage_dlopen_v225, sage_dlopen_note, sage_real_dlopen_v225, 0

        /* The exported, versioned names. */
        EXPORT  sage_dlsym_export_v234, sage_dlsym_v234, dlsym@@GLIBC_2.34
        EXPORT  sage_dlsym_export_v225, sage_dlsym_v225, dlsym@GLIBC_2.2.5
        EXPORT  sage_dlopen_export_v234, sage_dlopen_v234, dlopen@@GLIBC_2.34
        EXPORT  sage_dlopen_export_v225, sage_dlopen_v225, dlopen@GLIBC_2.2.5

#else
#error "dlsym_trampoline.S supports x86-64 only; other architectures use dlsym_fallback.c"
#endif

        .section .note.GNU-stack,"",@progbits
