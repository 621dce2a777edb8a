/* Device OS result codes (system_error_t) as catalogue errors. */
#include "ctrl.h"

#include <stdio.h>

struct system_error {
	int32_t code;
	const char *name;
	enum error_code error;
	const char *text;
	const char *hint;
};

static const struct system_error system_errors[] = {
#define E(code, name, error, text, hint) {code, #name, error, text, hint},
#include "system_errors.def"
#undef E
};

static const struct system_error *find(int32_t code)
{
	for (size_t i = 0; i < sizeof(system_errors) / sizeof(system_errors[0]); i++)
		if (system_errors[i].code == code)
			return &system_errors[i];
	return NULL;
}

const char *ctrl_system_error_name(int32_t code)
{
	const struct system_error *e = find(code);
	return e ? e->name : NULL;
}

int ctrl_error_from_result(struct error *err, int32_t result, unsigned type, const char *device_os)
{
	const struct system_error *e = find(result);
	const char *req = ctrl_request_name(type);
	char os[40] = "";
	if (device_os && device_os[0])
		snprintf(os, sizeof(os), " (Device OS %s)", device_os);
	if (!e) {
		error_set(err, ERR_DEVICE_REJECTED,
			  "the device answered control request %s with error %d%s", req,
			  (int)result, os);
		error_detail_str(err, "cause", "system-error");
	} else if (e->error == ERR_REQUEST_UNSUPPORTED) {
		error_set(err, e->error,
			  "the device does not support control request %s (%u)%s: %s", req, type,
			  os, e->text);
		error_detail_int(err, "request_type", type);
		if (os[0])
			error_detail_str(err, "device_os", device_os);
	} else {
		error_set(err, e->error, "the device refused control request %s: %s (%s, %d)%s",
			  req, e->text, e->name, (int)e->code, os);
		if (e->error == ERR_DEVICE_REJECTED)
			error_detail_str(err, "cause", "system-error");
	}
	error_detail_int(err, "device_code", result);
	if (e) {
		error_detail_str(err, "system_error", e->name);
		if (e->error == ERR_DEVICE_REJECTED)
			error_detail_str(err, "device_text", e->text);
		error_hint(err, "%s", e->hint);
	}
	error_detail_str(err, "request", req);
	return -1;
}
