#include "facts.h"

#include "platform.h"

#include <stdbool.h>
#include <string.h>

enum fact_kind {
	FACT_TEXT,    /* strings, integers and booleans as they are */
	FACT_HEX,     /* an address or flag word: 0x%08x */
	FACT_BYTES,   /* a size: "1234 bytes" */
	FACT_ERRNO,   /* "No such file or directory (errno 2)" */
	FACT_MS,      /* milliseconds shown as seconds */
	FACT_SECONDS, /* whole seconds */
	FACT_LIST,    /* an array of strings or objects, one per line */
	FACT_DEVICES, /* an array of DEVICE objects (candidates) */
};

/* Display order and wording of every declared detail key (proto/errors.def).
 * Keys not listed still show, with their name as the label. */
static const struct {
	const char *key;
	const char *label;
	enum fact_kind kind;
} fact_table[] = {
    {"file", "file", FACT_TEXT},
    {"device", "device", FACT_TEXT},
    {"port", "port", FACT_TEXT},
    {"platform", "platform", FACT_TEXT},
    {"job", "job", FACT_TEXT},
    {"job_id", "job", FACT_TEXT},
    {"target", "target", FACT_TEXT},
    {"reason", "reason", FACT_TEXT},
    {"cause", "cause", FACT_TEXT},
    {"diagnosis", "diagnosis", FACT_TEXT},
    {"device_code", "device's code", FACT_TEXT},
    {"device_text", "device said", FACT_TEXT},
    {"failed_checks", "failed checks", FACT_LIST},
    {"module_function", "module", FACT_TEXT},
    {"module_index", "module index", FACT_TEXT},
    {"module", "module number in file", FACT_TEXT},
    {"device_os", "Device OS", FACT_TEXT},
    {"transport", "transport", FACT_TEXT},
    {"mode", "mode", FACT_TEXT},
    {"phase", "phase", FACT_TEXT},
    {"device_state", "device left", FACT_TEXT},
    {"size", "size", FACT_BYTES},
    {"expected_size", "expected size", FACT_BYTES},
    {"limit", "limit", FACT_TEXT},
    {"stored_crc", "CRC-32 stored in file", FACT_TEXT},
    {"computed_crc", "CRC-32 of contents", FACT_TEXT},
    {"offset", "offset", FACT_HEX},
    {"flags", "flags", FACT_HEX},
    {"address", "address", FACT_HEX},
    {"region", "memory region", FACT_TEXT},
    {"attributes", "region attributes", FACT_TEXT},
    {"needed", "needed", FACT_TEXT},
    {"alt", "DFU alt setting", FACT_TEXT},
    {"chunk", "DFU chunk", FACT_TEXT},
    {"block", "YMODEM block", FACT_TEXT},
    {"bytes_sent", "bytes sent", FACT_BYTES},
    {"dfu_state_name", "DFU state", FACT_TEXT},
    {"dfu_status_name", "DFU status", FACT_TEXT},
    {"dfu_state", "DFU state code", FACT_TEXT},
    {"dfu_status", "DFU status code", FACT_TEXT},
    {"usb_error", "USB error", FACT_TEXT},
    {"protection", "protection", FACT_TEXT},
    {"module_version", "module version", FACT_TEXT},
    {"minimum_version", "minimum version", FACT_TEXT},
    {"timeout_ms", "timeout", FACT_MS},
    {"waited_s", "waited", FACT_SECONDS},
    {"holder", "held by", FACT_TEXT},
    {"holder_pid", "holder's pid", FACT_TEXT},
    {"path", "path", FACT_TEXT},
    {"operation", "operation", FACT_TEXT},
    {"errno", "system error", FACT_ERRNO},
    {"socket", "socket", FACT_TEXT},
    {"uid", "your uid", FACT_TEXT},
    {"owner_uid", "owner's uid", FACT_TEXT},
    {"by_uid", "cancelled by uid", FACT_TEXT},
    {"admin_group", "admin group", FACT_TEXT},
    {"descriptor", "descriptor", FACT_TEXT},
    {"request", "request", FACT_TEXT},
    {"field", "field", FACT_TEXT},
    {"argument", "argument", FACT_TEXT},
    {"candidates", "candidates", FACT_DEVICES},
    {"usb_trace", "USB trace", FACT_LIST},
};

static void put(FILE *out, int indent, const char *label, const char *value)
{
	char cut[FACTS_VALUE_MAX + 4];
	if (strlen(value) > FACTS_VALUE_MAX) {
		snprintf(cut, sizeof(cut), "%.*s...", FACTS_VALUE_MAX, value);
		value = cut;
	}
	fprintf(out, "%*s%-22s %s\n", indent, "", label, value);
}

static const char *str(const json_t *d, const char *key)
{
	return json_string_value(json_object_get(d, key));
}

static bool has(const json_t *d, const char *key)
{
	return json_object_get(d, key) != NULL;
}

/* "Electron (electron, platform id 10)" from a name and/or an id. */
static void platform_text(char *buf, size_t size, const char *name, const json_t *id)
{
	const struct platform *p = name ? platform_by_name(name) : NULL;
	if (!p && json_is_integer(id))
		p = platform_by_id((int)json_integer_value(id));
	if (p)
		snprintf(buf, size, "%s (platform id %u)", p->display, p->id);
	else if (name)
		snprintf(buf, size, "%s", name);
	else
		snprintf(buf, size, "platform id %lld", (long long)json_integer_value(id));
}

static void range_text(char *buf, size_t size, const json_t *start, const json_t *end)
{
	long long s = json_integer_value(start), e = json_integer_value(end);
	snprintf(buf, size, "0x%08llx - 0x%08llx (%lld bytes)", s, e, e - s);
}

static void version_text(char *buf, size_t size, const json_t *version, const char *release)
{
	if (json_is_integer(version) && release && *release)
		snprintf(buf, size, "version %lld (Device OS %s)",
			 (long long)json_integer_value(version), release);
	else if (json_is_integer(version))
		snprintf(buf, size, "version %lld", (long long)json_integer_value(version));
	else
		snprintf(buf, size, "Device OS %s", release ? release : "?");
}

/* Facts that only mean something together: expected next to actual. */
static void print_pairs(FILE *out, const json_t *d, int indent, json_t *shown)
{
	char buf[256], ver[128];
	if (has(d, "image_platform") || has(d, "image_platform_id")) {
		platform_text(buf, sizeof(buf), str(d, "image_platform"),
			      json_object_get(d, "image_platform_id"));
		put(out, indent, "file built for", buf);
	}
	if (has(d, "device_platform") || has(d, "device_platform_id")) {
		platform_text(buf, sizeof(buf), str(d, "device_platform"),
			      json_object_get(d, "device_platform_id"));
		put(out, indent, "device is", buf);
	}
	if (has(d, "start") && has(d, "end")) {
		range_text(buf, sizeof(buf), json_object_get(d, "start"),
			   json_object_get(d, "end"));
		put(out, indent, "module occupies", buf);
	}
	if (has(d, "slot_start") && has(d, "slot_end")) {
		range_text(buf, sizeof(buf), json_object_get(d, "slot_start"),
			   json_object_get(d, "slot_end"));
		put(out, indent, "slot", buf);
	}
	if (has(d, "required_function") || has(d, "required_version")) {
		version_text(ver, sizeof(ver), json_object_get(d, "required_version"),
			     str(d, "required_release"));
		snprintf(buf, sizeof(buf), "%s %lld, %s",
			 str(d, "required_function") ? str(d, "required_function") : "module",
			 (long long)json_integer_value(json_object_get(d, "required_index")), ver);
		put(out, indent, "needs", buf);
	}
	if (has(d, "installed_version") || has(d, "installed_release")) {
		version_text(buf, sizeof(buf), json_object_get(d, "installed_version"),
			     str(d, "installed_release"));
		put(out, indent, "device has", buf);
	}
	static const char *const consumed[] = {
	    "image_platform",
	    "image_platform_id",
	    "device_platform",
	    "device_platform_id",
	    "start",
	    "end",
	    "slot_start",
	    "slot_end",
	    "required_function",
	    "required_index",
	    "required_version",
	    "required_release",
	    "installed_version",
	    "installed_release",
	};
	for (size_t i = 0; i < sizeof(consumed) / sizeof(consumed[0]); i++)
		json_object_set_new(shown, consumed[i], json_true());
}

static void print_list(FILE *out, const json_t *arr, int indent, const char *label, bool devices)
{
	size_t i, n = json_array_size(arr);
	const json_t *v;
	char buf[FACTS_VALUE_MAX + 1];
	if (!devices && n > 0 && json_is_string(json_array_get(arr, 0)) && n <= 8) {
		/* Short lists of words read best on one line. */
		size_t off = 0;
		buf[0] = '\0';
		json_array_foreach(arr, i, v) off +=
		    (size_t)snprintf(buf + off, off < sizeof(buf) ? sizeof(buf) - off : 0, "%s%s",
				     i ? ", " : "", json_string_value(v));
		put(out, indent, label, buf);
		return;
	}
	put(out, indent, label, n ? "" : "(none)");
	json_array_foreach(arr, i, v)
	{
		if (i == FACTS_LIST_MAX) {
			fprintf(out, "%*s  (%zu more; --json shows all)\n", indent + 23, "",
				n - FACTS_LIST_MAX);
			break;
		}
		if (devices && json_is_object(v)) {
			const char *key = str(v, "key"), *plat = str(v, "platform");
			const char *tty = str(v, "tty"), *mode = str(v, "mode");
			const char *usb = str(json_object_get(v, "usb"), "port");
			snprintf(buf, sizeof(buf), "%s  %s, %s mode, %s%s usb %s", key ? key : "?",
				 plat ? plat : "unknown platform", mode ? mode : "unknown",
				 tty ? tty : "", tty ? "," : "", usb ? usb : "?");
		} else if (json_is_string(v)) {
			snprintf(buf, sizeof(buf), "%s", json_string_value(v));
		} else {
			char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			snprintf(buf, sizeof(buf), "%s", s ? s : "?");
			free(s);
		}
		fprintf(out, "%*s  %s\n", indent + 23, "", buf);
	}
}

static void print_value(FILE *out, const json_t *v, int indent, const char *label,
			enum fact_kind kind)
{
	char buf[FACTS_VALUE_MAX + 1];
	long long n = json_integer_value(v);
	if (kind == FACT_LIST || kind == FACT_DEVICES || json_is_array(v)) {
		if (json_is_array(v)) {
			print_list(out, v, indent, label, kind == FACT_DEVICES);
			return;
		}
		kind = FACT_TEXT;
	}
	if (!json_is_integer(v) && kind != FACT_TEXT)
		kind = FACT_TEXT;
	switch (kind) {
	case FACT_HEX:
		snprintf(buf, sizeof(buf), "0x%08llx", n);
		break;
	case FACT_BYTES:
		snprintf(buf, sizeof(buf), "%lld bytes", n);
		break;
	case FACT_ERRNO:
		snprintf(buf, sizeof(buf), "%s (errno %lld)", strerror((int)n), n);
		break;
	case FACT_MS:
		snprintf(buf, sizeof(buf), "%.1f s", (double)n / 1000.0);
		break;
	case FACT_SECONDS:
		snprintf(buf, sizeof(buf), "%lld s", n);
		break;
	default:
		if (json_is_string(v)) {
			snprintf(buf, sizeof(buf), "%s", json_string_value(v));
		} else {
			char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
			snprintf(buf, sizeof(buf), "%s", s ? s : "?");
			free(s);
		}
	}
	put(out, indent, label, buf);
}

void facts_print(FILE *out, const json_t *detail, int indent)
{
	const char *key;
	json_t *v;
	if (!json_is_object(detail) || json_object_size(detail) == 0)
		return;
	json_t *shown = json_object();
	print_pairs(out, detail, indent, shown);
	for (size_t i = 0; i < sizeof(fact_table) / sizeof(fact_table[0]); i++) {
		v = json_object_get(detail, fact_table[i].key);
		if (!v || json_object_get(shown, fact_table[i].key) || json_is_null(v))
			continue;
		print_value(out, v, indent, fact_table[i].label, fact_table[i].kind);
		json_object_set_new(shown, fact_table[i].key, json_true());
	}
	json_object_foreach((json_t *)detail, key, v)
	{
		char label[64];
		if (json_object_get(shown, key) || json_is_null(v))
			continue;
		snprintf(label, sizeof(label), "%s", key);
		for (char *p = label; *p; p++)
			if (*p == '_')
				*p = ' ';
		print_value(out, v, indent, label, FACT_TEXT);
	}
	json_decref(shown);
}
