#include "state.h"

#include "device.h"

#include <stdio.h>
#include <string.h>

static json_t *module_json(const struct vmodule *m)
{
	json_t *failed = json_array();
	validate_failed_names(m->checked, m->passed, failed);
	return json_pack("{s:s,s:i,s:i,s:s,s:I,s:b,s:o,s:b}", "function",
			 module_function_name(m->function), "index", m->index, "version",
			 m->version, "store", module_store_name(m->store), "address",
			 (json_int_t)m->address, "valid", m->passed == m->checked, "failed_checks",
			 failed, "reported", m->reported);
}

static json_t *device_json(struct sim_device *d, const char *dir)
{
	struct vscan s;
	device_scan(d, &s);
	json_t *modules = json_array();
	for (unsigned i = 0; i < s.n; i++)
		json_array_append_new(modules, module_json(&s.m[i]));
	json_t *regions = json_array();
	if (dir) {
		if (flash_dump(d->flash, dir, d->spec.name, regions) < 0)
			g_printerr("flashd-sim: %s: cannot write dumps into %s\n", d->spec.name,
				   dir);
	} else {
		for (unsigned i = 0; i < d->flash->n_regions; i++) {
			struct flash_region *r = &d->flash->region[i];
			gchar *file = g_strdup_printf("%s-alt%d.bin", d->spec.name, r->alt);
			json_array_append_new(
			    regions, json_pack("{s:i,s:s,s:I,s:I,s:s}", "alt", r->alt, "name",
					       r->name, "base", (json_int_t)r->base, "size",
					       (json_int_t)r->size, "dump", file));
			g_free(file);
		}
	}
	json_t *assets = json_array();
	for (unsigned i = 0; i < d->n_assets; i++) {
		const struct sim_asset *a = &d->assets[i];
		GString *sha = g_string_new(NULL);
		for (int k = 0; k < 32; k++)
			g_string_append_printf(sha, "%02x", a->sha256[k]);
		gchar *data_sha = g_compute_checksum_for_data(G_CHECKSUM_SHA256, a->data, a->size);
		json_array_append_new(assets, json_pack("{s:s,s:s,s:s,s:I}", "name", a->name,
							"sha256", sha->str, "data_sha256", data_sha,
							"size", (json_int_t)a->size));
		g_free(data_sha);
		g_string_free(sha, TRUE);
	}
	json_t *o = json_pack(
	    "{s:s,s:s,s:i,s:s,s:s,s:s,s:s,s:o,s:{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I},s:o}", "name",
	    d->spec.name, "platform", d->spec.platform->name, "platform_id", d->spec.platform->id,
	    "device_id", d->spec.id, "port", d->spec.port, "mode", device_mode_name(d), "os",
	    d->spec.os, "modules", modules, "received", "ymodem_bytes",
	    (json_int_t)device_ymodem_bytes(d), "dfu_bytes", (json_int_t)d->dfu_bytes,
	    "dfu_requests", (json_int_t)d->dfu_requests, "dfu_requests_to_write",
	    (json_int_t)d->dfu_requests_to_write, "ctrl_update_bytes",
	    (json_int_t)d->ctrl_update_bytes, "last_write_ms", (json_int_t)d->last_write_ms,
	    "dfu_erased_bytes", (json_int_t)d->dfu_erased_bytes, "dfu_upload_bytes",
	    (json_int_t)d->dfu_upload_bytes, "app_discarded_bytes",
	    (json_int_t)device_app_discarded(d), "regions", regions);
	json_object_set_new(o, "assets", assets);
	if (d->ncp_version) {
		GString *sha = g_string_new(NULL);
		for (int k = 0; k < 32; k++)
			g_string_append_printf(sha, "%02x", d->ncp_sha256[k]);
		json_object_set_new(o, "ncp",
				    json_pack("{s:i,s:s,s:I}", "version", d->ncp_version, "sha256",
					      sha->str, "size", (json_int_t)d->ncp_size));
		g_string_free(sha, TRUE);
	}
	return o;
}

json_t *state_document(struct sim *sim, const char *dir)
{
	json_t *devices = json_array();
	for (unsigned i = 0; i < sim->n_devices; i++)
		json_array_append_new(devices, device_json(sim->devices[i], dir));
	return json_pack("{s:o}", "devices", devices);
}

int state_write(struct sim *sim)
{
	if (!sim->state_dir)
		return 0;
	g_mutex_lock(&sim->lock);
	json_t *doc = state_document(sim, sim->state_dir);
	g_mutex_unlock(&sim->lock);
	gchar *path = g_build_filename(sim->state_dir, "state.json", NULL);
	gchar *tmp = g_strdup_printf("%s.tmp", path);
	int rc = json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_SORT_KEYS);
	if (rc == 0)
		rc = rename(tmp, path);
	if (rc != 0)
		g_printerr("flashd-sim: cannot write %s\n", path);
	g_free(tmp);
	g_free(path);
	json_decref(doc);
	return rc == 0 ? 0 : -1;
}
