/* The transports built into this flashd, in order of preference. */
#pragma once

#include "transport.h"

/* NULL-terminated; stubs stand in for transports not built in. */
const struct transport_ops *const *transports_builtin(void);
/* Whether t is a stand-in for a transport that is not built in. */
bool transport_is_stub(const struct transport_ops *t);
