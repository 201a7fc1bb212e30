/*
 * The trampolines' slow path (tramp.h). A trampoline (tramp_table.S,
 * generated) jumps here with its index in %r11 and the app's frame
 * untouched: the argument registers of any driver entry point (rdi, rsi,
 * rdx, rcx, r8, r9, rax = the vector-register count of a varargs call,
 * xmm0-7) are saved, sage_tramp_slow_path(index) runs (it counts the call
 * and passes the suspend gate, which may resume the process), the
 * registers come back and the trampoline's real entry point is entered by
 * a tail jump, so the callee sees exactly the caller's arguments, stack
 * arguments and return address. A nonzero answer is a CUresult the call
 * returns without reaching the driver (a failed resume).
 *
 * The frame is kept with %rbp and the stack realigned to 16 bytes, so the
 * C code and a callee using aligned SSE stores are safe even if the caller
 * left the stack misaligned; the CFI lets unwinders (libgcc, libunwind,
 * gdb) walk from the gate through here to the app's caller.
 */
#if defined(__x86_64__)

        .text
        .hidden sage_tramp_real
        .hidden sage_tramp_slow_path
        .globl  sage_tramp_slow
        .hidden sage_tramp_slow
        .type   sage_tramp_slow, @function
        .balign 16
sage_tramp_slow:
        .cfi_startproc
        pushq   %rbp
        .cfi_adjust_cfa_offset 8
        .cfi_rel_offset %rbp, 0
        movq    %rsp, %rbp
        .cfi_def_cfa_register %rbp
        andq    $-16, %rsp
        subq    $192, %rsp
        movq    %rdi, 0(%rsp)
        movq    %rsi, 8(%rsp)
        movq    %rdx, 16(%rsp)
        movq    %rcx, 24(%rsp)
        movq    %r8, 32(%rsp)
        movq    %r9, 40(%rsp)
        movq    %rax, 48(%rsp)
        movq    %r11, 56(%rsp)
        movaps  %xmm0, 64(%rsp)
        movaps  %xmm1, 80(%rsp)
        movaps  %xmm2, 96(%rsp)
        movaps  %xmm3, 112(%rsp)
        movaps  %xmm4, 128(%rsp)
        movaps  %xmm5, 144(%rsp)
        movaps  %xmm6, 160(%rsp)
        movaps  %xmm7, 176(%rsp)
        movl    %r11d, %edi
        call    sage_tramp_slow_path
        testl   %eax, %eax
        jnz     1f
        movq    0(%rsp), %rdi
        movq    8(%rsp), %rsi
        movq    16(%rsp), %rdx
        movq    24(%rsp), %rcx
        movq    32(%rsp), %r8
        movq    40(%rsp), %r9
        movq    48(%rsp), %rax
        movl    56(%rsp), %r11d
        movaps  64(%rsp), %xmm0
        movaps  80(%rsp), %xmm1
        movaps  96(%rsp), %xmm2
        movaps  112(%rsp), %xmm3
        movaps  128(%rsp), %xmm4
        movaps  144(%rsp), %xmm5
        movaps  160(%rsp), %xmm6
        movaps  176(%rsp), %xmm7
        .cfi_remember_state
        movq    %rbp, %rsp
        popq    %rbp
        .cfi_restore %rbp
        .cfi_def_cfa %rsp, 8
        leaq    sage_tramp_real(%rip), %r10
        jmp     *(%r10,%r11,8)
1:
        .cfi_restore_state
        /* %eax: the CUresult of a failed gate; the driver is not called. */
        movq    %rbp, %rsp
        popq    %rbp
        .cfi_restore %rbp
        .cfi_def_cfa %rsp, 8
        ret
        .cfi_endproc
        .size   sage_tramp_slow, .-sage_tramp_slow

#else
#error "tramp_entry.S is x86-64 only (meson builds no trampolines elsewhere)"
#endif

        .section .note.GNU-stack,"",@progbits
