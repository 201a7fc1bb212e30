/*
 * What the trampolines' assembly (tramp_entry.S) knows of C: the layout of
 * the calling thread's gate slot (SageGateSlot, suspend_gate.h; checked
 * there with static asserts) and the slow path's answers. Plain #defines:
 * the assembler includes this file too.
 */
#pragma once

/* SageGateSlot: the thread's call counters and its shadow stack of trampoline calls in flight. */
#define SAGE_TRAMP_SLOT_ENTERS 0
#define SAGE_TRAMP_SLOT_LEAVES 8
#define SAGE_TRAMP_SLOT_DEPTH 28  /* uint32: entries used in the shadow stack */
#define SAGE_TRAMP_SLOT_SHADOW 32 /* SageGateShadow[SAGE_TRAMP_SHADOW_MAX] */
#define SAGE_TRAMP_SHADOW_ENTRY 16
#define SAGE_TRAMP_SHADOW_RET 0 /* the caller's return address */
#define SAGE_TRAMP_SHADOW_SP 8  /* %rsp once the driver function has returned to the landing pad */
/* Trampoline calls nested on one thread (a driver callback that calls the driver again) that are
 * counted until they return; deeper ones are counted only while they pass the gate. */
#define SAGE_TRAMP_SHADOW_MAX 16

/* sage_tramp_slow_path's answers besides a CUresult to return. */
#define SAGE_TRAMP_TAIL 0           /* enter the driver by a tail jump, not counted in flight */
#define SAGE_TRAMP_TRACK 0xffffffff /* counted in flight: return through the landing pad */
