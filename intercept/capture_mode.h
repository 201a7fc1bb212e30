/*
 * The relaxed stream-capture mode around libsage's own driver calls.
 *
 * A thread's capture mode (cuThreadExchangeStreamCaptureMode) is global by
 * default: while any thread captures in the global mode, the driver refuses
 * the calls it deems unsafe (pinning, unpinning, allocating, freeing,
 * waiting for a stream: scripts/probes/capture) and invalidates that
 * capture. libsage pins staging, waits for its staging streams and backs
 * deferred memory on app threads and on its own, where the app may be
 * capturing elsewhere: those calls run relaxed, and the thread's own mode is
 * put back after. cuCtxSynchronize is refused in every mode: libsage does
 * not synchronize the context on the upload and assembly paths while a
 * capture is open (sage_capture_open).
 */
#pragma once

#include <cuda.h>
#include <stdbool.h>

typedef CUresult (*SageExchangeCaptureMode)(CUstreamCaptureMode *);

/* Relaxed from now on; returns the mode sage_capture_restore puts back (RELAXED: nothing to put back). */
static inline CUstreamCaptureMode sage_capture_relax(SageExchangeCaptureMode exchange) {
        CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;

        if (!exchange || exchange(&mode) != CUDA_SUCCESS)
                return CU_STREAM_CAPTURE_MODE_RELAXED;
        return mode;
}

static inline void sage_capture_restore(SageExchangeCaptureMode exchange, CUstreamCaptureMode mode) {
        if (exchange && mode != CU_STREAM_CAPTURE_MODE_RELAXED)
                (void)exchange(&mode);
}

/*
 * Does any thread of the app have a stream capture open (capture.c)? Then
 * libsage must not synchronize the context: the driver refuses it in every
 * mode and invalidates the capture. False costs one atomic load.
 */
bool sage_capture_open(void);
/* Run `fn` after a cuStreamEndCapture that leaves no capture open (NULL: nothing; init.c sets it). */
void sage_capture_on_close(void (*fn)(void));
