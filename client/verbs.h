/* flashctl verbs: one file per verb, dispatched from flashctl.c. */
#pragma once

#include <stdbool.h>

struct cli_global {
	const char *socket_path; /* --socket, or NULL */
	bool json;		 /* --json */
	bool is_tty;		 /* stdout is a terminal */
	bool no_color;		 /* NO_COLOR set or not a terminal */
};

struct option;

/*
 * One verb: everything about it lives in its own file (cmd_NAME.c), in one
 * `const struct cmd_entry cmd_NAME_entry`; flashctl.c only lists the entries
 * in its table (the shape of tmux's cmd_entry / cmd_table).
 */
struct cmd_entry {
	const char *name;	      /* the verb as typed: "flash" */
	const struct option *options; /* the long options the verb parses (getopt_long table,
				       * {0}-terminated); NULL when it takes none */
	const char *usage;	      /* arguments after the verb: "FILE... [--json]" */
	const char *summary;	      /* one line for 'flashctl --help' */
	/* Runs the verb with argv[0] = the verb's name; returns the process exit status
	 * (the catalogue's exit statuses). */
	int (*exec)(int argc, char **argv, const struct cli_global *g);
};

extern const struct cmd_entry cmd_inspect_entry;
extern const struct cmd_entry cmd_list_entry;
extern const struct cmd_entry cmd_watch_entry;
extern const struct cmd_entry cmd_jobs_entry;
extern const struct cmd_entry cmd_cancel_entry;
extern const struct cmd_entry cmd_flash_entry;
extern const struct cmd_entry cmd_check_entry;
extern const struct cmd_entry cmd_info_entry;
extern const struct cmd_entry cmd_history_entry;
extern const struct cmd_entry cmd_auto_entry;
extern const struct cmd_entry cmd_station_entry;
extern const struct cmd_entry cmd_fleet_entry;
extern const struct cmd_entry cmd_errors_entry;

/* The usage error for a verb: "usage: flashctl NAME USAGE" (exit status of 'usage'). */
int cmd_usage_error(const struct cli_global *g, const struct cmd_entry *e);
/* flash and check share one runner (cmd_flash.c); check = preflight verdicts only. */
int flash_run(int argc, char **argv, const struct cli_global *g, bool check);
