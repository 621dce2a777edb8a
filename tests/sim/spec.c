#include "spec.h"

#include "device.h"

#include "osver.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const mode_names[] = {
    [SIM_MODE_LISTENING] = "listening", [SIM_MODE_DFU] = "dfu",
    [SIM_MODE_NORMAL] = "normal",	[SIM_MODE_SAFE] = "safe",
    [SIM_MODE_UNPLUGGED] = "unplugged",
};

const char *sim_mode_name(enum sim_mode m)
{
	return (unsigned)m < G_N_ELEMENTS(mode_names) ? mode_names[m] : "unknown";
}

int sim_mode_from_name(const char *s)
{
	for (unsigned i = 0; i < G_N_ELEMENTS(mode_names); i++)
		if (s && strcmp(s, mode_names[i]) == 0)
			return (int)i;
	return -1;
}

void spec_default_id(const struct platform *p, const char *name, char id[25])
{
	/* docs/device/platforms.md#usb-strings-and-device-ids: nRF52 ids start e00fce68, RTL872x
	 * ids 0a10aced2021, Gen 2 is the STM32 UID. */
	const char *prefix = "";
	if (p->mcu == MCU_NRF52840)
		prefix = "e00fce68";
	else if (p->mcu == MCU_RTL8721D)
		prefix = "0a10aced2021";
	else if (p->mcu == MCU_STM32F205)
		prefix = "3c00";
	gchar *seed = g_strdup_printf("flashd-sim/%s/%s", p->name, name);
	gchar *hex = g_compute_checksum_for_string(G_CHECKSUM_SHA256, seed, -1);
	size_t n = strlen(prefix);
	memcpy(id, prefix, n);
	memcpy(id + n, hex, 24 - n);
	id[24] = '\0';
	g_free(hex);
	g_free(seed);
}

unsigned spec_port_bus(const char *port)
{
	unsigned bus = (unsigned)strtoul(port, NULL, 10);
	return bus ? bus : 1;
}

static bool port_valid(const char *s)
{
	/* "B-P[.P...]" as in sysfs USB device names. */
	const char *dash = strchr(s, '-');
	if (!dash || dash == s || strlen(s) >= SIM_PORT_MAX)
		return false;
	for (const char *c = s; *c; c++)
		if (!isdigit((unsigned char)*c) && *c != '-' && *c != '.')
			return false;
	return isdigit((unsigned char)dash[1]) && isdigit((unsigned char)s[strlen(s) - 1]);
}

static bool id_valid(const char *s)
{
	if (strlen(s) != 24)
		return false;
	for (const char *c = s; *c; c++)
		if (!isdigit((unsigned char)*c) && !(*c >= 'a' && *c <= 'f'))
			return false;
	return true;
}

/* "4.0.2, 4.1.0, 4.0.1": the releases of the table nearest to an unknown one. */
static void nearest_releases(const char *os, char *buf, size_t size)
{
	const struct os_release *near[4];
	unsigned n = osver_nearest(os, near, 4);
	size_t len = 0;
	buf[0] = '\0';
	for (unsigned i = 0; i < n && len < size; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? ", " : "",
					near[i]->version);
}

/* "0.4.1 to 3.3.1": the final releases published for the platform. */
static void platform_releases(const struct platform *p, char *buf, size_t size)
{
	const struct os_release *first = NULL, *last = NULL;
	for (unsigned i = 0; i < osver_count(); i++) {
		const struct os_release *r = osver_at(i);
		if (r->prerelease || !osver_ships_on(r, p->id))
			continue;
		if (!first)
			first = r;
		last = r;
	}
	if (first)
		snprintf(buf, size, "%s to %s", first->version, last->version);
	else
		snprintf(buf, size, "none");
}

/*
 * The modules of a Device OS release on the spec's platform: the row of
 * flashd's release table (proto/osver_table.h, generated from Device OS's
 * sources).  A release the table does not know is refused, naming the
 * nearest ones; so is a release that was not published for the platform.
 */
static int resolve_os(struct sim_spec *spec, char *err, size_t err_size)
{
	const struct platform *p = spec->platform;
	const struct os_release *r = osver_by_release(spec->os);
	char names[96];
	if (!r) {
		nearest_releases(spec->os, names, sizeof(names));
		snprintf(err, err_size,
			 "os=%s: not a Device OS release flashd knows (nearest: %s; the list: "
			 "flashd-sim --list-releases)",
			 spec->os, names);
		return -1;
	}
	const struct os_build *b = osver_build_for(r, p->id);
	if (!b || !b->bootloader) {
		platform_releases(p, names, sizeof(names));
		snprintf(err, err_size,
			 "platform=%s with os=%s: Device OS %s was not released for the %s "
			 "(its releases: %s)",
			 p->name, spec->os, spec->os, p->display, names);
		return -1;
	}
	spec->system_version = r->system;
	spec->bootloader_version = b->bootloader;
	spec->bootloader_dep = b->bootloader_dep;
	spec->radio_version = b->radio_stack;
	spec->radio_dep = b->radio_dep;
	spec->prebootloader_version = b->prebootloader;
	return 0;
}

void spec_list_releases(FILE *out)
{
	fprintf(out, "%-16s %-6s %-10s %-6s %-10s %-6s %-6s %-32s %s\n", "RELEASE", "SYSTEM",
		"BOOTLOADER", "NEEDS", "SOFTDEVICE", "NEEDS", "PREBL", "PLATFORMS", "INFERRED");
	for (unsigned i = 0; i < osver_count(); i++) {
		const struct os_release *r = osver_at(i);
		for (unsigned k = 0; k < r->n_builds; k++) {
			const struct os_build *b = &r->builds[k];
			char names[160] = "";
			size_t len = 0;
			for (unsigned id = 0; id < 64 && len < sizeof(names); id++) {
				const struct platform *p = platform_by_id((int)id);
				if ((b->platforms & (UINT64_C(1) << id)) && p)
					len += (size_t)snprintf(names + len, sizeof(names) - len,
								"%s%s", len ? "," : "", p->name);
			}
			unsigned inf = r->inferred | b->inferred;
			fprintf(out, "%-16s %-6u %-10u %-6u %-10u %-6u %-6u %-32s %s%s%s%s%s%s%s\n",
				r->version, r->system, b->bootloader, b->bootloader_dep,
				b->radio_stack, b->radio_dep, b->prebootloader, names,
				inf ? "" : "-", inf & OSVER_INFERRED_SYSTEM ? "system " : "",
				inf & OSVER_INFERRED_BOOTLOADER ? "bootloader " : "",
				inf & OSVER_INFERRED_BOOTLOADER_DEP ? "needs-bootloader " : "",
				inf & OSVER_INFERRED_RADIO_STACK ? "softdevice " : "",
				inf & OSVER_INFERRED_PREBOOTLOADER ? "prebootloader " : "",
				inf & OSVER_INFERRED_PLATFORMS ? "platforms" : "");
		}
	}
}

static const char *const fault_kinds[] = {
    "stall", "error", "silent",	 "unplug",    "slow-erase",  "reset",	    "cancel",
    "nak",   "stray", "atprobe", "ctrl-busy", "ctrl-unplug", "ctrl-silent", "ctrl-result"};

/* WHERE[:ARG] of a fault. */
static int parse_where(const char *where, struct sim_fault *f)
{
	const char *colon = strchr(where, ':');
	if (colon) {
		if (strlen(colon + 1) >= sizeof(f->arg))
			return -1;
		strcpy(f->arg, colon + 1);
	}
	size_t wlen = colon ? (size_t)(colon - where) : strlen(where);
	char w[32];
	if (wlen >= sizeof(w))
		return -1;
	memcpy(w, where, wlen);
	w[wlen] = '\0';
	char *end;
	if (wlen == 0) {
		f->unit = SIM_AT_NONE;
		return 0;
	}
	static const struct {
		const char *prefix;
		enum sim_fault_unit unit;
	} units[] = {{"chunk", SIM_AT_CHUNK},
		     {"block", SIM_AT_BLOCK},
		     {"byte", SIM_AT_BYTE},
		     {"req", SIM_AT_REQ}};
	for (unsigned i = 0; i < G_N_ELEMENTS(units); i++) {
		size_t n = strlen(units[i].prefix);
		if (strncmp(w, units[i].prefix, n) == 0) {
			f->unit = units[i].unit;
			f->at = (uint32_t)strtoul(w + n, &end, 10);
			if (end == w + n || *end)
				return -1;
			return 0;
		}
	}
	f->at = (uint32_t)strtoul(w, &end, 10);
	if (end == w)
		return -1;
	if (*end == '%' && end[1] == '\0' && f->at <= 100)
		f->unit = SIM_AT_PERCENT;
	else if (*end == '\0')
		f->unit = SIM_AT_BYTE;
	else
		return -1;
	return 0;
}

static int parse_fault(const char *text, struct sim_fault *f, char *err, size_t err_size)
{
	memset(f, 0, sizeof(*f));
	const char *at = strchr(text, '@');
	size_t klen = at ? (size_t)(at - text) : strlen(text);
	if (klen == 0 || klen >= sizeof(f->kind))
		goto bad;
	memcpy(f->kind, text, klen);
	bool known = false;
	for (unsigned i = 0; i < G_N_ELEMENTS(fault_kinds); i++)
		known |= strcmp(f->kind, fault_kinds[i]) == 0;
	if (!known) {
		snprintf(err, err_size,
			 "fault '%s': unknown kind (stall, error, silent, unplug, slow-erase, "
			 "reset, cancel, nak, stray, atprobe, ctrl-busy, ctrl-unplug, ctrl-silent, "
			 "ctrl-result)",
			 text);
		return -1;
	}
	if (!at)
		return 0;
	if (parse_where(at + 1, f) < 0)
		goto bad;
	/* DFU faults that set an error status: a misspelt status must not pass as another. */
	if ((strcmp(f->kind, "stall") == 0 || strcmp(f->kind, "error") == 0) && f->arg[0] &&
	    dfu_status_from_name(f->arg) < 0) {
		snprintf(err, err_size,
			 "fault '%s': unknown DFU status '%s' (errTARGET, errFILE, errWRITE, "
			 "errERASE, errPROG, errVERIFY, errADDRESS, errVENDOR, errUNKNOWN, "
			 "errSTALLEDPKT)",
			 text, f->arg);
		return -1;
	}
	return 0;
bad:
	snprintf(err, err_size,
		 "fault '%s': expected kind@where[:arg], where = N%%, chunkN, blockN, "
		 "byteN or empty",
		 text);
	return -1;
}

int spec_parse_faults(const char *text, struct sim_spec *spec, char *err, size_t err_size)
{
	spec->n_faults = 0;
	gchar **parts = g_strsplit(text, "+", -1);
	int rc = 0;
	for (unsigned i = 0; parts[i] && rc == 0; i++) {
		if (!*parts[i])
			continue;
		if (spec->n_faults >= SIM_MAX_FAULTS) {
			snprintf(err, err_size, "faults: at most %d per device", SIM_MAX_FAULTS);
			rc = -1;
			break;
		}
		rc = parse_fault(parts[i], &spec->faults[spec->n_faults], err, err_size);
		if (rc == 0)
			spec->n_faults++;
	}
	g_strfreev(parts);
	return rc;
}

static const char *default_os(const struct platform *p)
{
	/* The newest final release published for the platform whose values for
	 * it all come from sources (none inferred). */
	const char *fallback = NULL;
	for (unsigned i = osver_count(); i-- > 0;) {
		const struct os_release *r = osver_at(i);
		const struct os_build *b = osver_build_for(r, p->id);
		if (r->prerelease || !b)
			continue;
		if (!fallback)
			fallback = r->version;
		if (!r->inferred && !b->inferred)
			return r->version;
	}
	return fallback ? fallback : "2.3.1";
}

static int set_key(struct sim_spec *spec, const char *key, const char *value, char *err,
		   size_t err_size)
{
	if (strcmp(key, "platform") == 0) {
		spec->platform = platform_by_name(value);
		if (!spec->platform) {
			snprintf(err, err_size, "platform=%s: unknown platform", value);
			return -1;
		}
	} else if (strcmp(key, "mode") == 0) {
		int m = sim_mode_from_name(value);
		if (m < 0 || m == SIM_MODE_UNPLUGGED) {
			snprintf(err, err_size, "mode=%s: expected listening, dfu, normal or safe",
				 value);
			return -1;
		}
		spec->mode = (enum sim_mode)m;
	} else if (strcmp(key, "os") == 0) {
		if (strlen(value) >= sizeof(spec->os)) {
			snprintf(err, err_size, "os=%s: too long", value);
			return -1;
		}
		strcpy(spec->os, value);
	} else if (strcmp(key, "name") == 0) {
		if (!*value || strlen(value) >= sizeof(spec->name) || strpbrk(value, "/ \t")) {
			snprintf(err, err_size, "name=%s: 1-%d characters, no '/' or spaces", value,
				 SIM_NAME_MAX - 1);
			return -1;
		}
		strcpy(spec->name, value);
	} else if (strcmp(key, "id") == 0) {
		if (!id_valid(value)) {
			snprintf(err, err_size, "id=%s: expected 24 lowercase hex digits", value);
			return -1;
		}
		strcpy(spec->id, value);
	} else if (strcmp(key, "serial") == 0) {
		if (strlen(value) >= sizeof(spec->serial)) {
			snprintf(err, err_size, "serial=%s: too long", value);
			return -1;
		}
		strcpy(spec->serial, value);
	} else if (strcmp(key, "port") == 0) {
		if (!port_valid(value)) {
			snprintf(err, err_size, "port=%s: expected a USB port path like 1-1.2",
				 value);
			return -1;
		}
		strcpy(spec->port, value);
	} else if (strcmp(key, "protected") == 0) {
		if (strcmp(value, "0") && strcmp(value, "1")) {
			snprintf(err, err_size, "protected=%s: expected 0 or 1", value);
			return -1;
		}
		spec->protected_ = value[0] == '1';
	} else if (strcmp(key, "tty") == 0) {
		if (strcmp(value, "0") && strcmp(value, "1")) {
			snprintf(err, err_size, "tty=%s: expected 0 or 1", value);
			return -1;
		}
		spec->no_tty = value[0] == '0';
	} else if (strcmp(key, "faults") == 0) {
		return spec_parse_faults(value, spec, err, err_size);
	} else {
		snprintf(err, err_size,
			 "unknown SPEC key '%s' (platform, mode, os, name, id, serial, "
			 "port, protected, tty, faults, peer)",
			 key);
		return -1;
	}
	return 0;
}

int spec_parse(const char *text, unsigned index, struct sim_spec *spec, char *err, size_t err_size)
{
	memset(spec, 0, sizeof(*spec));
	spec->mode = SIM_MODE_NORMAL;
	/* peer=COMMAND takes the rest of the SPEC, since a command line may hold commas. */
	gchar *copy = g_strdup(text);
	char *peer = strstr(copy, "peer=");
	if (peer && (peer == copy || peer[-1] == ',')) {
		spec->peer = g_strdup(peer + 5);
		*peer = '\0';
	}
	gchar **parts = g_strsplit(copy, ",", -1);
	g_free(copy);
	int rc = 0;
	for (unsigned i = 0; parts[i] && rc == 0; i++) {
		if (!*parts[i])
			continue;
		char *eq = strchr(parts[i], '=');
		if (!eq) {
			snprintf(err, err_size, "'%s': expected key=value", parts[i]);
			rc = -1;
			break;
		}
		*eq = '\0';
		rc = set_key(spec, parts[i], eq + 1, err, err_size);
	}
	g_strfreev(parts);
	if (rc < 0)
		goto fail;
	if (!spec->platform) {
		snprintf(err, err_size, "SPEC needs platform=NAME");
		goto fail;
	}
	if (spec->platform->mcu == MCU_STM32F103) {
		snprintf(err, err_size,
			 "platform=core: the Core is not simulated (its DFU strings and "
			 "layout are unverified)");
		goto fail;
	}
	if (!spec->os[0])
		snprintf(spec->os, sizeof(spec->os), "%s", default_os(spec->platform));
	if (resolve_os(spec, err, err_size) < 0)
		goto fail;
	const struct platform *p = spec->platform;
	if (spec->protected_ && osver_compare(spec->os, "6.1.0") < 0) {
		snprintf(err, err_size, "protected=1 needs a 6.1.0+ bootloader (os=%s)", spec->os);
		goto fail;
	}
	if (!spec->name[0])
		snprintf(spec->name, sizeof(spec->name), "d%u", index + 1);
	if (!spec->id[0])
		spec_default_id(p, spec->name, spec->id);
	if (!spec->port[0])
		snprintf(spec->port, sizeof(spec->port), "1-%u", index + 1);
	return 0;
fail:
	spec_clear(spec);
	return -1;
}

void spec_clear(struct sim_spec *spec)
{
	g_free(spec->peer);
	spec->peer = NULL;
}
