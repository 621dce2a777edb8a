#include "device_json.h"

#include "jobs.h"

#include <stdio.h>

static json_t *check_names_json(unsigned mask)
{
	json_t *a = json_array();
	const char *names[MODULE_CHECKS_MAX];
	unsigned n = module_checks_named(mask, names);
	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_string(names[i]));
	return a;
}

/* "checked" names the checks someone actually ran (the device's vc, or flashd's DFU
 * read-back), so a client never reads "not failed" as "passed". */
static json_t *module_json(const struct installed_module *m)
{
	return json_pack("{s:s, s:i, s:i, s:s, s:i, s:b, s:o, s:o}", "function",
			 module_function_name(m->function), "index", m->index, "version",
			 m->version, "store", module_store_name(m->store), "address", m->address,
			 "valid", installed_module_valid(m), "checked",
			 check_names_json(m->checked), "failed_checks",
			 check_names_json(m->checked & ~m->passed));
}

json_t *device_to_json(const struct device *dev, bool with_modules)
{
	const struct device_snapshot *s = &dev->s;
	const struct platform *p = s->facts.platform;
	char vid[8], pid[8];
	snprintf(vid, sizeof(vid), "%04x", s->vid);
	snprintf(pid, sizeof(pid), "%04x", s->pid);
	json_t *o = json_pack(
	    "{s:s, s:s?, s:s?, s:o, s:s, s:b, s:b, s:s?, s:{s:i, s:i, s:s, s:s, s:s}, s:s?}", "key",
	    s->key, "id", s->facts.device_id[0] ? s->facts.device_id : NULL, "platform",
	    p ? p->name : NULL, "platform_id", p ? json_integer(p->id) : json_null(), "mode",
	    device_mode_name(s->mode), "present", s->present, "busy", dev->job != NULL, "tty",
	    s->tty[0] ? s->tty : NULL, "usb", "bus", s->busnum, "address", s->devnum, "port",
	    s->port_path, "vid", vid, "pid", pid, "os",
	    s->facts.os_version[0] ? s->facts.os_version : NULL);
	if (!o)
		return json_object();
	json_object_set_new(o, "job", dev->job ? json_string(job_id(dev->job)) : json_null());
	if (dev->colliding)
		json_object_set_new(o, "id_collides", json_true());
	if (with_modules) {
		json_t *mods = json_array();
		for (unsigned i = 0; i < s->facts.n_modules; i++)
			json_array_append_new(mods, module_json(&s->facts.modules[i]));
		json_object_set_new(o, "modules_known", json_boolean(s->facts.modules_known));
		json_object_set_new(o, "modules", mods);
		if (s->facts.assets_known) {
			/* the asset store, as the device reported it (control request 91) */
			json_t *assets = json_array();
			for (unsigned i = 0; i < s->facts.n_assets; i++) {
				const struct installed_asset *a = &s->facts.assets[i];
				char sha[65];
				for (int k = 0; k < 32; k++)
					snprintf(sha + 2 * k, 3, "%02x", a->sha256[k]);
				json_array_append_new(
				    assets, json_pack("{s:s,s:s,s:I}", "name", a->name, "sha256",
						      sha, "size", (json_int_t)a->size));
			}
			json_object_set_new(o, "assets", assets);
		}
	}
	return o;
}
