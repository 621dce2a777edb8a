/*
 * flashctl info [DEVICE] [--no-probe] [--json]: everything the daemon knows
 * about one device: platform, id, mode, port, Device OS and each installed
 * module with its integrity / range / platform / dependency verdicts.
 * Without DEVICE, the only attached device.  When the modules are not known,
 * the daemon is asked to probe the device (device-info "probe": listening-mode
 * console, or DFU read-back) unless --no-probe.
 */
#include "conn.h"
#include "osver.h"
#include "platform.h"
#include "render.h"
#include "verbs.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The checks the device (or flashd's read-back) runs on every module. */
static const char *const info_checks[] = {"integrity", "range", "platform", "dependencies"};

static const char *str(const json_t *o, const char *key)
{
	return json_string_value(json_object_get(o, key));
}

/* The only present device's key; device-not-found or ambiguous-target otherwise. */
static const char *only_device(struct conn *c, json_t **ret_reply, struct error *err)
{
	json_t *req = wire_request_new(WIRE_REQ_LIST_DEVICES, 0);
	json_t *reply = conn_call(c, req, NULL, 0, NULL, NULL, err);
	json_decref(req);
	if (!reply)
		return NULL;
	json_t *dev, *present = json_array();
	size_t i;
	json_array_foreach(json_object_get(reply, "devices"), i,
			   dev) if (json_is_true(json_object_get(dev, "present")))
	    json_array_append(present, dev);
	*ret_reply = reply;
	if (json_array_size(present) == 1) {
		const char *key = str(json_array_get(present, 0), "key");
		json_decref(present);
		return key;
	}
	if (json_array_size(present) == 0) {
		json_decref(present);
		error_set(err, ERR_DEVICE_NOT_FOUND, "no Particle device is attached");
		error_detail_str(err, "target", "any");
		return NULL;
	}
	error_set(err, ERR_AMBIGUOUS_TARGET, "%zu devices are attached and none was named",
		  json_array_size(present));
	error_hint(err, "name one: flashctl info ID (or a tty path or USB port path); "
			"'flashctl list' shows them");
	error_detail_str(err, "target", "any");
	error_detail_json(err, "candidates", present);
	return NULL;
}

static int function_from_name(const char *name)
{
	for (int f = 0; f <= MODULE_FUNCTION_ASSET; f++)
		if (name && strcmp(module_function_name(f), name) == 0)
			return f;
	return -1;
}

static bool names_check(const json_t *list, const char *check)
{
	const json_t *v;
	size_t k;
	json_array_foreach(list, k, v) if (!strcmp(json_string_value(v), check)) return true;
	return false;
}

/* "FAILED", "ok", or "not checked" when nobody ran the check (DFU read-back reads
 * system parts prefix-only).  A daemon without "checked" meant ok by not failed. */
static const char *check_verdict(const json_t *m, const char *check)
{
	const json_t *checked = json_object_get(m, "checked");
	if (names_check(json_object_get(m, "failed_checks"), check))
		return "FAILED";
	return !checked || names_check(checked, check) ? "ok" : "not checked";
}

/* "Device OS 4.0.1", or for a bootloader several releases shipped on this
 * platform "Device OS 4.0.0-4.0.2" (final releases, from flashd's table). */
static bool release_text(int function, long long version, int platform_id, char *buf, size_t size)
{
	if (function < 0 || version <= 0 || version > UINT16_MAX)
		return false;
	const char *release = osver_release_for(function, (uint16_t)version);
	if (release) {
		snprintf(buf, size, "Device OS %s", release);
		return true;
	}
	const struct os_release *first, *last;
	if (function != MODULE_FUNCTION_BOOTLOADER || platform_id < 0 ||
	    !osver_span(platform_id, function, (uint16_t)version, &first, &last))
		return false;
	if (first == last)
		snprintf(buf, size, "Device OS %s", first->version);
	else
		snprintf(buf, size, "Device OS %s-%s", first->version, last->version);
	return true;
}

static void print_module(const json_t *m, int platform_id)
{
	const char *fn = str(m, "function");
	int f = function_from_name(fn);
	long long version = json_integer_value(json_object_get(m, "version"));
	char release[64];
	bool named = release_text(f, version, platform_id, release, sizeof(release));
	const json_t *failed = json_object_get(m, "failed_checks");
	char name[48], ver[96];
	snprintf(name, sizeof(name), "%s %lld",
		 f >= 0 ? module_function_phrase(f) : (fn ? fn : "?"),
		 (long long)json_integer_value(json_object_get(m, "index")));
	snprintf(ver, sizeof(ver), "v%lld%s%s%s", version, named ? " (" : "", named ? release : "",
		 named ? ")" : "");
	/* Listening-mode listings may not give addresses: 0 means not reported. */
	long long address = json_integer_value(json_object_get(m, "address"));
	char at[24] = "";
	if (address)
		snprintf(at, sizeof(at), "at 0x%08llx", address);
	printf("    %-18s %-24s %-8s %-14s %s\n", name, ver, str(m, "store") ? str(m, "store") : "",
	       at, json_is_true(json_object_get(m, "valid")) ? "valid" : "INVALID");
	printf("    %-18s", "");
	for (size_t i = 0; i < sizeof(info_checks) / sizeof(info_checks[0]); i++)
		printf(" %s %s%s", info_checks[i], check_verdict(m, info_checks[i]),
		       i + 1 < sizeof(info_checks) / sizeof(info_checks[0]) ? "," : "");
	/* Checks beyond the four (product, dependencies-full) when they failed. */
	const json_t *v;
	size_t k;
	json_array_foreach(failed, k, v)
	{
		const char *c = json_string_value(v);
		bool known = false;
		for (size_t i = 0; i < sizeof(info_checks) / sizeof(info_checks[0]); i++)
			known = known || !strcmp(c, info_checks[i]);
		if (!known)
			printf(", %s FAILED", c);
	}
	putchar('\n');
}

/*
 * "4.0.1": the release the device reported, else the one its system part's
 * version names in flashd's release table ("4.0.1 (from system part 1
 * v4005)"), else what is known of it.
 */
static const char *device_os_text(const json_t *d, char *buf, size_t size)
{
	if (str(d, "os"))
		return str(d, "os");
	const json_t *m;
	size_t i;
	json_array_foreach(json_object_get(d, "modules"), i, m)
	{
		int f = function_from_name(str(m, "function"));
		long long index = json_integer_value(json_object_get(m, "index"));
		long long version = json_integer_value(json_object_get(m, "version"));
		if ((f != MODULE_FUNCTION_SYSTEM && f != MODULE_FUNCTION_MONO) || index > 1 ||
		    version <= 0 || version > UINT16_MAX)
			continue;
		const char *release = osver_release_for(f, (uint16_t)version);
		if (release)
			snprintf(buf, size, "%s (from %s %lld v%lld)", release,
				 module_function_phrase(f), index, version);
		else
			snprintf(buf, size,
				 "not known (%s %lld v%lld is not in flashd's release table)",
				 module_function_phrase(f), index, version);
		return buf;
	}
	return "not known yet";
}

static void print_device(const json_t *d, bool probed, bool no_probe)
{
	const char *plat = str(d, "platform");
	const struct platform *p = plat ? platform_by_name(plat) : NULL;
	const json_t *usb = json_object_get(d, "usb");
	printf("%s %s\n", p ? p->display : "Unknown platform", str(d, "key"));
	if (p)
		printf("  %-14s %s (%s, platform id %u, %s%s)\n", "platform", p->display, p->name,
		       p->id,
		       p->cellular ? "cellular"
		       : p->wifi   ? "Wi-Fi"
				   : "no radio",
		       p->gen == 4   ? ", P2 family"
		       : p->gen == 3 ? ", Gen 3"
		       : p->gen == 2 ? ", Gen 2"
				     : "");
	else
		printf("  %-14s unknown\n", "platform");
	printf("  %-14s %s%s\n", "device id", str(d, "id") ? str(d, "id") : "not known yet",
	       json_is_true(json_object_get(d, "id_collides"))
		   ? " (another device reports the same id)"
		   : "");
	printf("  %-14s %s\n", "mode", str(d, "mode") ? str(d, "mode") : "unknown");
	printf("  %-14s %s\n", "port",
	       str(d, "tty") ? str(d, "tty") : "- (no serial port in this mode)");
	printf("  %-14s port %s, bus %lld address %lld, %s:%s\n", "usb",
	       str(usb, "port") ? str(usb, "port") : "?",
	       (long long)json_integer_value(json_object_get(usb, "bus")),
	       (long long)json_integer_value(json_object_get(usb, "address")),
	       str(usb, "vid") ? str(usb, "vid") : "?", str(usb, "pid") ? str(usb, "pid") : "?");
	char os[96];
	printf("  %-14s %s\n", "Device OS", device_os_text(d, os, sizeof(os)));
	printf("  %-14s %s%s\n", "state",
	       json_is_true(json_object_get(d, "present")) ? "attached"
							   : "gone (re-enumerating or unplugged)",
	       json_is_true(json_object_get(d, "busy")) ? ", busy with job " : "");
	if (json_is_true(json_object_get(d, "busy")))
		printf("  %-14s %s\n", "job", str(d, "job") ? str(d, "job") : "?");
	const json_t *mods = json_object_get(d, "modules");
	const json_t *m;
	size_t i;
	if (json_array_size(mods) == 0) {
		if (probed)
			printf(
			    "  %-14s not known: the device did not list them (Device OS 6.x has "
			    "no\n"
			    "  %-14s listening-mode console; in DFU mode flashd reads them back)\n",
			    "modules", "");
		else if (no_probe || !json_is_true(json_object_get(d, "present")))
			printf(
			    "  %-14s not known yet (flashctl info %s without --no-probe asks the "
			    "device)\n",
			    "modules", str(d, "key"));
		else
			printf("  %-14s not known yet\n", "modules");
		return;
	}
	printf("  %-14s %s%s\n", "modules",
	       json_is_true(json_object_get(d, "modules_known"))
		   ? "(complete list, as the device reported it"
		   : "(partial: what flashd has read so far",
	       probed ? ", asked just now)" : ")");
	json_array_foreach(mods, i, m) print_module(m, p ? p->id : -1);
	/* the asset store, where the device reported it (control request 91) */
	const json_t *assets = json_object_get(d, "assets");
	if (json_is_array(assets)) {
		if (json_array_size(assets) == 0)
			printf("  %-14s none stored\n", "assets");
		json_array_foreach(assets, i, m)
		{
			const char *sha = str(m, "sha256");
			const char *name = str(m, "name");
			printf("  %-14s %s, %lld bytes, SHA-256 %.12s\u2026\n",
			       i == 0 ? "assets" : "", name ? name : "?",
			       (long long)json_integer_value(json_object_get(m, "size")),
			       sha ? sha : "?");
		}
	}
}

/* Whether the reply leaves the modules to be asked for: not known, device present, idle. */
static bool wants_probe(const json_t *reply)
{
	const json_t *d = json_object_get(reply, "device");
	return !json_is_true(json_object_get(d, "modules_known")) &&
	       json_is_true(json_object_get(d, "present"));
}

/* device-info with "probe": the daemon asks the device and replies when done. */
static json_t *probe(struct conn *c, const struct cli_global *g, const char *key, struct error *err)
{
	if (g->is_tty && !g->json && isatty(STDERR_FILENO))
		fprintf(stderr, "asking %s what it runs...\n", key);
	json_t *req = wire_request_new(WIRE_REQ_DEVICE_INFO, 0);
	json_object_set_new(req, "device", json_string(key));
	json_object_set_new(req, "probe", json_true());
	json_t *reply = conn_call(c, req, NULL, 0, NULL, NULL, err);
	json_decref(req);
	return reply;
}

static const struct option info_options[] = {
    {"json", no_argument, NULL, 'j'}, {"no-probe", no_argument, NULL, 'n'}, {0}};

static int cmd_info_exec(int argc, char **argv, const struct cli_global *g)
{
	struct cli_global local = *g;
	struct conn c;
	struct error err;
	json_t *list = NULL;
	bool no_probe = false, probed = false;
	int o;
	error_init(&err);
	while ((o = getopt_long(argc, argv, "", info_options, NULL)) != -1) {
		if (o == 'j')
			local.json = true;
		else if (o == 'n')
			no_probe = true;
		else
			return cmd_usage_error(g, &cmd_info_entry);
	}
	if (argc - optind > 1)
		return cmd_usage_error(g, &cmd_info_entry);
	if (conn_open(&c, &local, &err) < 0)
		return render_error_free(&local, &err);
	const char *what = optind < argc ? argv[optind] : only_device(&c, &list, &err);
	json_t *reply = NULL;
	if (what) {
		json_t *req = wire_request_new(WIRE_REQ_DEVICE_INFO, 0);
		json_object_set_new(req, "device", json_string(what));
		reply = conn_call(&c, req, NULL, 0, NULL, NULL, &err);
		json_decref(req);
	}
	if (reply && !no_probe && wants_probe(reply)) {
		const char *key = str(json_object_get(reply, "device"), "key");
		json_t *fresh = key ? probe(&c, &local, key, &err) : NULL;
		json_decref(reply);
		reply = fresh;
		probed = true;
	}
	json_decref(list);
	conn_close(&c);
	if (!reply)
		return render_error_free(&local, &err);
	if (local.json)
		render_json_line(reply);
	else
		print_device(json_object_get(reply, "device"), probed, no_probe);
	json_decref(reply);
	return 0;
}

const struct cmd_entry cmd_info_entry = {
    .name = "info",
    .options = info_options,
    .usage = "[DEVICE] [--no-probe] [--json]",
    .summary = "everything known about a device",
    .exec = cmd_info_exec,
};
