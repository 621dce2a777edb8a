#include "ttynode.h"

#include "device.h"

#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <termios.h>
#include <unistd.h>

#define TTYNODE_PATH_MAX 64

int ttynode_pick(struct sim *sim, const struct sim_device *self)
{
	for (int i = 0;; i++) {
		bool used = false;
		for (unsigned k = 0; k < sim->n_devices; k++) {
			const struct sim_device *d = sim->devices[k];
			used |= d != self && d->present && d->tty_index == i;
		}
		if (!used)
			return i;
	}
}

static void devnode_of(int index, char *buf, size_t size)
{
	snprintf(buf, size, "/dev/ttyACM%d", index);
}

bool ttynode_has_pty(struct sim *sim, int index)
{
	char node[TTYNODE_PATH_MAX];
	devnode_of(index, node, sizeof(node));
	return umockdev_testbed_get_dev_fd(sim->tb, node) >= 0;
}

/* root/dev/.ptymap/_dev_pts_N -> "166:N": umockdev's map from a pty to its device. */
static gchar *ptymap_path(struct sim *sim, const char *slave)
{
	gchar *flat = g_strdup(slave);
	g_strdelimit(flat, "/", '_');
	gchar *root = umockdev_testbed_get_root_dir(sim->tb);
	gchar *path = g_build_filename(root, "dev", ".ptymap", flat, NULL);
	g_free(root);
	g_free(flat);
	return path;
}

static bool slave_name(int master, char *buf, size_t size)
{
	return ptsname_r(master, buf, size) == 0;
}

void ttynode_link(struct sim *sim, int index)
{
	char node[TTYNODE_PATH_MAX], slave[TTYNODE_PATH_MAX];
	devnode_of(index, node, sizeof(node));
	int master = umockdev_testbed_get_dev_fd(sim->tb, node);
	if (master < 0 || !slave_name(master, slave, sizeof(slave)))
		return;
	gchar *root = umockdev_testbed_get_root_dir(sim->tb);
	gchar *path = g_build_filename(root, node, NULL);
	g_unlink(path);
	if (symlink(slave, path) < 0)
		g_printerr("flashd-sim: cannot create %s: %m\n", node);
	g_free(path);
	g_free(root);
}

/* A raw pty pair as umockdev makes them (no echo, no line discipline editing). */
static int fresh_master(void)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return -1;
	struct termios t;
	if (grantpt(m) < 0 || unlockpt(m) < 0 || tcgetattr(m, &t) < 0) {
		close(m);
		return -1;
	}
	cfmakeraw(&t);
	tcsetattr(m, TCSANOW, &t);
	return m;
}

static void drop_stale_sysfs_link(struct sim *sim, int index)
{
	gchar *root = umockdev_testbed_get_root_dir(sim->tb);
	gchar *name = g_strdup_printf("%d:%d", TTYNODE_MAJOR, index);
	gchar *link = g_build_filename(root, "sys", "dev", "char", name, NULL);
	g_unlink(link);
	g_free(link);
	g_free(name);
	g_free(root);
}

void ttynode_release(struct sim *sim, int index)
{
	drop_stale_sysfs_link(sim, index);
	char node[TTYNODE_PATH_MAX], old_slave[TTYNODE_PATH_MAX], new_slave[TTYNODE_PATH_MAX];
	devnode_of(index, node, sizeof(node));
	int master = umockdev_testbed_get_dev_fd(sim->tb, node);
	if (master < 0)
		return;
	int m = fresh_master();
	if (m < 0 || !slave_name(m, new_slave, sizeof(new_slave))) {
		g_printerr("flashd-sim: %s: cannot open a new pty: %m\n", node);
		if (m >= 0)
			close(m);
		return;
	}
	if (slave_name(master, old_slave, sizeof(old_slave))) {
		gchar *old_map = ptymap_path(sim, old_slave);
		g_unlink(old_map);
		g_free(old_map);
	}
	/* Closes the old master (hang-up for its openers); umockdev's table keeps the number. */
	if (dup2(m, master) < 0)
		g_printerr("flashd-sim: %s: cannot replace the pty: %m\n", node);
	close(m);
	gchar *map = ptymap_path(sim, new_slave);
	gchar *majmin = g_strdup_printf("%d:%d", TTYNODE_MAJOR, index);
	g_unlink(map);
	if (symlink(majmin, map) < 0)
		g_printerr("flashd-sim: cannot map %s: %m\n", new_slave);
	g_free(majmin);
	g_free(map);
}
