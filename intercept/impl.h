/* The prototypes of the IMPL hooks' logic now live in hooks.h; this name stays for the share files. */
#pragma once

#include "hooks.h"
