/*
 * The trampolines' common code (tramp.h). A trampoline (tramp_table.S,
 * generated) jumps here with its index in %r11 and the app's frame
 * untouched: the argument registers of any driver entry point (rdi, rsi,
 * rdx, rcx, r8, r9, rax = the vector-register count of a varargs call,
 * xmm0-7), the stack arguments and the return address are the caller's.
 *
 * A call counts as in flight (the suspend gate's per-thread counters,
 * suspend_gate.h) until the driver function RETURNS, so that the drain
 * before a suspend waits for it: the driver may be using the memory that
 * suspend unmaps. The callee must still see the caller's stack exactly
 * (stack arguments, varargs), so the trampoline moves the caller's return
 * address to the thread's shadow stack (in its gate slot), pops it, and
 * calls the driver function, whose return address (the landing pad's) thus
 * takes the same place. The landing pad counts the call out and returns to
 * the caller: every call and return stays paired, so the CPU predicts
 * them (a return address swapped in place would mispredict every return:
 * ~50 ns a call on the CI machine against ~4). The shadow entry also
 * holds %rsp as it will be after the return, so entries abandoned by a
 * longjmp out of a driver callback are recognised (their frames are gone)
 * and dropped at the next return; a thread that exits inside a call has
 * its slot balanced at exit (suspend_gate.c). Calls nested deeper than
 * SAGE_TRAMP_SHADOW_MAX are counted only while they pass the gate.
 *
 * Fast path (gated, gate open): the slot from TLS, its counter bumped, one
 * load of the gate word, the shadow entry, the call; at the return the
 * landing pad. Slow path (the gate word set, the thread's first call, the
 * counted variant): sage_tramp_slow saves the argument registers, runs
 * sage_tramp_slow_path(index, entered) (it counts the call for the trace
 * and passes the gate, which may resume the process), restores them and
 * does what it answered: SAGE_TRAMP_TRACK (track as above),
 * SAGE_TRAMP_TAIL (tail jump, not counted: suspend off, or no room) or a
 * CUresult the call returns without reaching the driver (a failed gate of
 * an entry point known to return CUresult).
 *
 * The slow path keeps its frame with %rbp and realigns the stack to 16
 * bytes, so the C code and a callee using aligned SSE stores are safe even
 * if the caller left the stack misaligned; its CFI lets unwinders (libgcc,
 * libunwind, gdb) walk from the gate through here to the app's caller.
 * Unwinding from inside the driver function stops at the landing pad (its
 * caller is on the shadow stack, which DWARF cannot read): backtraces taken
 * inside the driver end there, and an exception thrown through a driver
 * frame would not pass it (the driver is C; its callbacks run on its own
 * threads).
 */
#include "tramp_abi.h"

#if defined(__x86_64__)

        .text
        .hidden sage_tramp_real
        .hidden sage_tramp_slow_path
        .hidden sage_gate_word
        .hidden sage_gate_fence_mode
        .hidden sage_gate_slot

/* The gated trampolines: the fast path while the gate is open. */
        .globl  sage_tramp_gated_entry
        .hidden sage_tramp_gated_entry
        .type   sage_tramp_gated_entry, @function
        .balign 16
sage_tramp_gated_entry:
        .cfi_startproc
        movq    sage_gate_slot@gottpoff(%rip), %r10
        movq    %fs:(%r10), %r10
        testq   %r10, %r10
        jz      .Lfresh                         /* the thread's first call: the slow path gives it a slot */
        cmpl    $SAGE_TRAMP_SHADOW_MAX, SAGE_TRAMP_SLOT_DEPTH(%r10)
        jae     .Lfresh                         /* nested too deep, or the shared fallback slot */
        incq    SAGE_TRAMP_SLOT_ENTERS(%r10)    /* in flight from here: only this thread writes it */
        cmpb    $0, sage_gate_fence_mode(%rip)
        jne     .Lfence
.Lcheck:
        cmpl    $0, sage_gate_word(%rip)
        jne     .Lentered                       /* closed, failed, or idleness to report */
.Ltrack:
        /* %r10: the slot, %r11: the index; the call is counted in flight. */
        pushq   %rax
        .cfi_adjust_cfa_offset 8
        movl    SAGE_TRAMP_SLOT_DEPTH(%r10), %eax
        incl    SAGE_TRAMP_SLOT_DEPTH(%r10)     /* taken before it is written: a signal handler's call takes the next */
        shll    $4, %eax
        leaq    SAGE_TRAMP_SLOT_SHADOW(%r10,%rax), %rax
        leaq    16(%rsp), %r10
        movq    %r10, SAGE_TRAMP_SHADOW_SP(%rax)
        movq    8(%rsp), %r10
        movq    %r10, SAGE_TRAMP_SHADOW_RET(%rax)
        leaq    sage_tramp_real(%rip), %r10
        movq    (%r10,%r11,8), %r11
        popq    %rax
        .cfi_adjust_cfa_offset -8
        /*
         * The caller's return address is on the shadow stack: drop it, and
         * call, which puts ours in its place. The callee sees the caller's
         * stack arguments where they were, and the return predictors stay
         * right (a return address swapped in place costs a misprediction
         * at every return).
         */
        addq    $8, %rsp
        .cfi_def_cfa_offset 0
        .cfi_undefined rip
        call    *%r11
/*
 * The driver function returns here, in the caller's frame: its return
 * value (rax, rdx, xmm0, xmm1, st0) is left alone, and only registers the
 * caller expects clobbered by a call are used. The entry is read before it
 * is given up, so a signal handler's call cannot overwrite it first.
 */
        .globl  sage_tramp_landing
        .hidden sage_tramp_landing
sage_tramp_landing:
        movq    sage_gate_slot@gottpoff(%rip), %r10
        movq    %fs:(%r10), %r10
1:
        movl    SAGE_TRAMP_SLOT_DEPTH(%r10), %r11d
        testl   %r11d, %r11d
        jz      2f
        subl    $1, %r11d
        shll    $4, %r11d
        leaq    SAGE_TRAMP_SLOT_SHADOW(%r10,%r11), %r11
        movq    SAGE_TRAMP_SHADOW_RET(%r11), %rcx
        movq    SAGE_TRAMP_SHADOW_SP(%r11), %rsi
        decl    SAGE_TRAMP_SLOT_DEPTH(%r10)
        incq    SAGE_TRAMP_SLOT_LEAVES(%r10)    /* out of flight (x86: the store is a release) */
        cmpq    %rsp, %rsi
        jne     1b                              /* left by a longjmp out of a driver callback: dropped */
        pushq   %rcx
        .cfi_def_cfa_offset 8
        .cfi_offset rip, -8
        ret
2:
        /* No entry of ours: the stack was switched inside a driver callback. Nowhere to return. */
        ud2
        .cfi_endproc

        /* Out of line, with the caller's frame as at entry. */
        .cfi_startproc
.Lfence:
        /* No membarrier: the closing side cannot order us, so the count is fenced before the load. */
        mfence
        jmp     .Lcheck
.Lfresh:
        xorl    %r10d, %r10d
        jmp     sage_tramp_slow
.Lentered:
        movl    $1, %r10d
        jmp     sage_tramp_slow
        .cfi_endproc
        .size   sage_tramp_gated_entry, .-sage_tramp_gated_entry

/* The counted trampolines (the trace): always the slow path, not counted in flight yet. */
        .globl  sage_tramp_counted_entry
        .hidden sage_tramp_counted_entry
        .type   sage_tramp_counted_entry, @function
        .balign 16
sage_tramp_counted_entry:
        .cfi_startproc
        xorl    %r10d, %r10d
        jmp     sage_tramp_slow
        .cfi_endproc
        .size   sage_tramp_counted_entry, .-sage_tramp_counted_entry

/* %r11: the index, %r10d: 1 if the fast path counted the call in flight. */
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
        movl    %r10d, %esi
        call    sage_tramp_slow_path
        movl    %eax, %r10d
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
        movq    %rbp, %rsp
        popq    %rbp
        .cfi_restore %rbp
        .cfi_def_cfa %rsp, 8
        testl   %r10d, %r10d
        jz      3f
        cmpl    $SAGE_TRAMP_TRACK, %r10d
        je      4f
        /* A CUresult of a failed gate: the driver is not called. */
        movl    %r10d, %eax
        ret
3:
        leaq    sage_tramp_real(%rip), %r10
        jmp     *(%r10,%r11,8)
4:
        movq    sage_gate_slot@gottpoff(%rip), %r10
        movq    %fs:(%r10), %r10
        jmp     .Ltrack
        .cfi_endproc
        .size   sage_tramp_slow, .-sage_tramp_slow

#else
#error "tramp_entry.S is x86-64 only (meson builds no trampolines elsewhere)"
#endif

        .section .note.GNU-stack,"",@progbits
