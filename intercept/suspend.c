/*
 * Registration of the process as an instance (suspend.h).
 *
 * The observer waits for the first successful call that gives the process
 * a context (a primary context retain, the warm-up's included, or a
 * cuCtxCreate), then registers once over a broker connection of its own
 * (the sharing connection may be off, or come and go) and turns itself off:
 * after that it costs the hooks nothing. The connection stays open for the
 * process's life: the broker forgets the instance when it closes. Flags
 * say what libsage knows makes the instance unsuspendable (keep-alive by
 * option; an MPS client by its environment); the broker adds what it knows
 * (extents, CUDA IPC) and decides. Any failure (no broker, an old broker
 * without SAGE_FEATURE_INSTANCES) leaves the process unregistered, which
 * changes nothing for the application.
 */
#include "suspend.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "broker_client.h"
#include "driver.h"
#include "log.h"
#include "options.h"

static pthread_mutex_t suspend_lock = PTHREAD_MUTEX_INITIALIZER;
/* The registration's connection: lives as long as the process (under suspend_lock). */
static SageBroker *suspend_broker;
static bool suspend_tried;

static bool creates_context(SageSym sym) {
        switch (sym) {
        case SAGE_SYM_cuDevicePrimaryCtxRetain:
        case SAGE_SYM_cuCtxCreate_v2:
        case SAGE_SYM_cuCtxCreate_v3:
        case SAGE_SYM_cuCtxCreate_v4: return true;
        default: return false;
        }
}

static uint32_t instance_flags(void) {
        uint32_t flags = 0;
        if (sage_options()->suspend_keep_alive)
                flags |= SAGE_INSTANCE_KEEP_ALIVE;
        /* An MPS client: the driver cannot checkpoint it. */
        if (getenv("CUDA_MPS_PIPE_DIRECTORY"))
                flags |= SAGE_INSTANCE_MPS;
        return flags;
}

static void register_instance(CUdevice dev) {
        CUuuid uuid;
        char why[320];
        int r;

        memset(&uuid, 0, sizeof(uuid));
        if (!sage_driver_extras.device_get_uuid || sage_driver_extras.device_get_uuid(&uuid, dev) != CUDA_SUCCESS) {
                sage_info("suspend: no device UUID; not registered");
                return;
        }
        r = sage_broker_connect_why(&suspend_broker, NULL, 500, why, sizeof(why));
        if (r == -EPROTONOSUPPORT) {
                sage_warn("suspend: %s; not registered", why);
                suspend_broker = NULL;
                return;
        }
        if (r) {
                sage_info("suspend: no broker (%s); not registered", why[0] ? why : "not running");
                suspend_broker = NULL;
                return;
        }
        r = sage_broker_instance_register(suspend_broker, (const uint8_t *)uuid.bytes, instance_flags());
        if (r) {
                sage_info("suspend: registration refused: %s %s", r > 0 ? sage_proto_error_name(r) : strerror(-r),
                          sage_broker_last_error(suspend_broker));
                suspend_broker = sage_broker_free(suspend_broker);
                return;
        }
        sage_info("suspend: registered as an instance (device %d)", (int)dev);
}

static void suspend_after(SageCall *call) {
        if (call->result != CUDA_SUCCESS || !creates_context(call->sym))
                return;
        pthread_mutex_lock(&suspend_lock);
        if (!suspend_tried) {
                suspend_tried = true;
                /* The device is the call's first traced argument (hooks.def: "device"). */
                register_instance((CUdevice)call->args[0]);
                sage_hooks_deactivate(SAGE_OBSERVER_SUSPEND);
        }
        pthread_mutex_unlock(&suspend_lock);
}

const SageObserver sage_suspend_observer = { .after = suspend_after };

void sage_suspend_start(void) {
        if (sage_options()->suspend)
                sage_hooks_activate(SAGE_OBSERVER_SUSPEND);
}
