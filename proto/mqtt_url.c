#include "mqtt_url.h"

#include <stdlib.h>
#include <string.h>

int mqtt_url_parse(const char *url, char *host, size_t host_size, int *port, bool *tls)
{
	const char *rest;
	if (strncmp(url, "mqtt://", 7) == 0) {
		*tls = false;
		rest = url + 7;
	} else if (strncmp(url, "mqtts://", 8) == 0) {
		*tls = true;
		rest = url + 8;
	} else {
		return -1;
	}
	const char *name = rest, *name_end, *port_text = NULL;
	if (*rest == '[') {
		name = rest + 1;
		name_end = strchr(name, ']');
		if (!name_end || (name_end[1] && name_end[1] != ':'))
			return -1;
		if (name_end[1] == ':')
			port_text = name_end + 2;
	} else {
		name_end = strchr(rest, ':');
		if (name_end)
			port_text = name_end + 1;
		else
			name_end = rest + strlen(rest);
	}
	size_t n = (size_t)(name_end - name);
	if (n == 0 || n >= host_size || memchr(name, '/', n) || memchr(name, '@', n) ||
	    memchr(name, '?', n))
		return -1;
	*port = *tls ? 8883 : 1883;
	if (port_text) {
		char *end;
		long p = strtol(port_text, &end, 10);
		if (end == port_text || (*end && strcmp(end, "/") != 0) || p < 1 || p > 65535)
			return -1;
		*port = (int)p;
	} else if (*name_end == '/' && name_end[1]) {
		return -1;
	}
	memcpy(host, name, n);
	host[n] = '\0';
	return 0;
}
