/* An MQTT broker's address as flashd's [mqtt] url and flashctl fleet --broker take it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* mqtt://HOST[:PORT] (port 1883) or mqtts://HOST[:PORT] (TLS, port 8883); HOST may be an
 * [IPv6] literal.  No user, path or query.  0, or -1 when url is not one of these. */
int mqtt_url_parse(const char *url, char *host, size_t host_size, int *port, bool *tls);
