/* flashctl verbs: one file per verb, dispatched from flashctl.c. */
#pragma once

#include <stdbool.h>

struct cli_global {
	const char *socket_path; /* --socket, or NULL */
	bool json;		 /* --json */
	bool is_tty;		 /* stdout is a terminal */
	bool no_color;		 /* NO_COLOR set or not a terminal */
};

/* Each returns the process exit status (the catalogue's exit statuses). */
int cmd_inspect(int argc, char **argv, const struct cli_global *g);
int cmd_errors(int argc, char **argv, const struct cli_global *g);
int cmd_list(int argc, char **argv, const struct cli_global *g);
int cmd_watch(int argc, char **argv, const struct cli_global *g);
int cmd_jobs(int argc, char **argv, const struct cli_global *g);
int cmd_cancel(int argc, char **argv, const struct cli_global *g);
int cmd_flash(int argc, char **argv, const struct cli_global *g);
int cmd_check(int argc, char **argv, const struct cli_global *g);
int cmd_info(int argc, char **argv, const struct cli_global *g);
int cmd_history(int argc, char **argv, const struct cli_global *g);
int cmd_fleet(int argc, char **argv, const struct cli_global *g);
/* flash and check share one runner (cmd_flash.c); check = preflight verdicts only. */
int flash_run(int argc, char **argv, const struct cli_global *g, bool check);
