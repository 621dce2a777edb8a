/*
 * The /dev/ttyACMn nodes of CDC devices: numbering and the pty behind each
 * node, across any sequence of plug, unplug and mode switches.
 *
 * Numbering follows cdc-acm: the lowest minor no present device holds, so a
 * number is reused by whichever device enumerates next, as on Linux.
 *
 * umockdev 0.17.16 keeps a node's pty master in its table forever and asserts
 * when the node is created again, and it leaves /sys/dev/char/166:N behind
 * (it reads the `dev` attribute with its newline).  So the first enumeration
 * with a number creates the node (a pty); every later one reuses the table
 * entry, but with a FRESH pty: at removal the old master is replaced (dup2 on
 * the same descriptor number), which hangs up every process still holding
 * the old node open (read gives EIO, poll POLLHUP), like a disconnected
 * cdc-acm tty, and the next device never sees stale bytes or stale openers.
 */
#pragma once

#include "sim.h"

#include <stdbool.h>

#define TTYNODE_MAJOR 166 /* cdc-acm */

/* Main thread, lock held: the number the next CDC enumeration of self gets. */
int ttynode_pick(struct sim *sim, const struct sim_device *self);
/* Whether umockdev has a pty for /dev/ttyACM<index> already (no `N:` line then). */
bool ttynode_has_pty(struct sim *sim, int index);
/* After the device was added without an `N:` line: point the node at the pty. */
void ttynode_link(struct sim *sim, int index);
/* After the tty device was removed: hang up its openers, drop stale sysfs links. */
void ttynode_release(struct sim *sim, int index);
