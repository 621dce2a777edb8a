/* The transports built into this flashd, in order of preference. */
#pragma once

#include "transport.h"

/* NULL-terminated. */
const struct transport_ops *const *transports_builtin(void);
