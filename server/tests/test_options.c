/* Unit tests of option parsing: defaults, ranges, junk, missing values. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "options.h"

/* Parses a NULL-terminated argument list; messages go to a memory stream. */
static enum options_result parse(struct options *opts, char *message,
				 size_t message_size, ...)
{
	char *argv[32] = { "aesdsocket" };
	int argc = 1;
	FILE *out, *err;
	enum options_result result;
	va_list ap;

	va_start(ap, message_size);
	while ((argv[argc] = va_arg(ap, char *)) != NULL)
		argc++;
	va_end(ap);
	memset(message, 0, message_size);
	out = fmemopen(message, message_size - 1, "w");
	err = out;
	assert_non_null(out);
	result = options_parse(opts, argc, argv, out, err);
	fclose(out);
	return result;
}

#define PARSE(opts, msg, ...) parse(opts, msg, sizeof(msg), __VA_ARGS__, NULL)

static void defaults_are_the_original_design(void **state)
{
	struct options o;
	char msg[256];

	(void)state;
	assert_int_equal(parse(&o, msg, sizeof(msg), NULL), OPTIONS_RUN);
	assert_false(o.daemonize);
	assert_int_equal(o.port, 9000);
	assert_string_equal(o.data_file, "/var/tmp/aesdsocketdata");
	assert_null(o.pidfile);
	assert_null(o.user);
	assert_null(o.bind_address);
	assert_int_equal(o.max_connections, 10240);
	assert_int_equal(o.workers, 0);	/* one per CPU, decided at start */
	assert_int_equal(o.buffer_budget, 32 * 1024 * 1024);
	assert_int_equal(o.max_packet, 1048576);
	assert_int_equal(o.idle_timeout_s, 60);
	assert_int_equal(o.send_timeout_s, 10);
}

static void short_and_long_forms(void **state)
{
	struct options o;
	char msg[256];

	(void)state;
	assert_int_equal(PARSE(&o, msg, "-d", "-p", "1234", "-f", "/tmp/d",
			       "-P", "/run/a.pid", "-s", "-c", "8", "-w", "3"),
			 OPTIONS_RUN);
	assert_true(o.daemonize);
	assert_true(o.log_to_stderr);
	assert_int_equal(o.port, 1234);
	assert_string_equal(o.data_file, "/tmp/d");
	assert_string_equal(o.pidfile, "/run/a.pid");
	assert_int_equal(o.max_connections, 8);
	assert_int_equal(o.workers, 3);
	assert_int_equal(PARSE(&o, msg, "--daemon", "--port=65535",
			       "--data-file", "/x", "--max-packet", "1",
			       "--idle-timeout", "0", "--send-timeout=86400",
			       "--user", "aesd", "--bind", "::1",
			       "--workers", "256", "--buffer-budget", "4096"),
			 OPTIONS_RUN);
	assert_int_equal(o.workers, 256);
	assert_int_equal(o.buffer_budget, 4096);
	assert_int_equal(o.port, 65535);
	assert_int_equal(o.max_packet, 1);
	assert_int_equal(o.idle_timeout_s, 0);
	assert_int_equal(o.send_timeout_s, 86400);
	assert_string_equal(o.user, "aesd");
	assert_string_equal(o.bind_address, "::1");
	assert_int_equal(PARSE(&o, msg, "--max-workers", "7", "-B", "1073741824"),
			 OPTIONS_RUN);
	assert_int_equal(o.workers, 7);
	assert_int_equal(o.buffer_budget, 1073741824);
}

static void port_out_of_range_is_a_usage_error(void **state)
{
	static const char *bad[] = { "0", "65536", "-1", "+80", " 80", "80x",
				     "0x50", "", "99999999999999999999999" };
	struct options o;
	char msg[512];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(PARSE(&o, msg, "-p", bad[i]),
				 OPTIONS_USAGE_ERROR);
		assert_non_null(strstr(msg, "invalid --port"));
		assert_non_null(strstr(msg, "--help"));
	}
}

static void other_numbers_are_range_checked(void **state)
{
	struct options o;
	char msg[512];

	(void)state;
	assert_int_equal(PARSE(&o, msg, "-c", "0"), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "--max-connections"));
	assert_int_equal(PARSE(&o, msg, "-c", "65537"), OPTIONS_USAGE_ERROR);
	assert_int_equal(PARSE(&o, msg, "-w", "0"), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "--workers"));
	assert_int_equal(PARSE(&o, msg, "-w", "257"), OPTIONS_USAGE_ERROR);
	assert_int_equal(PARSE(&o, msg, "-B", "4095"), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "--buffer-budget"));
	assert_int_equal(PARSE(&o, msg, "-B", "1073741825"), OPTIONS_USAGE_ERROR);
	assert_int_equal(PARSE(&o, msg, "-m", "0"), OPTIONS_USAGE_ERROR);
	assert_int_equal(PARSE(&o, msg, "-m", "1073741825"),
			 OPTIONS_USAGE_ERROR);
	assert_int_equal(PARSE(&o, msg, "-i", "86401"), OPTIONS_USAGE_ERROR);
	assert_int_equal(PARSE(&o, msg, "-t", "1.5"), OPTIONS_USAGE_ERROR);
}

static void missing_value_is_a_usage_error(void **state)
{
	struct options o;
	char msg[512];

	(void)state;
	assert_int_equal(PARSE(&o, msg, "-p"), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "needs a value"));
	assert_int_equal(PARSE(&o, msg, "--data-file"), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "needs a value"));
	assert_int_equal(PARSE(&o, msg, "--pidfile="), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "non-empty"));
}

static void junk_is_a_usage_error(void **state)
{
	struct options o;
	char msg[512];

	(void)state;
	assert_int_equal(PARSE(&o, msg, "-x"), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "unknown option '-x'"));
	assert_int_equal(PARSE(&o, msg, "--frobnicate"), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "--frobnicate"));
	assert_int_equal(PARSE(&o, msg, "stray"), OPTIONS_USAGE_ERROR);
	assert_non_null(strstr(msg, "unexpected argument 'stray'"));
}

static void help_and_version_exit_successfully(void **state)
{
	struct options o;
	char msg[4096];

	(void)state;
	assert_int_equal(PARSE(&o, msg, "--help"), OPTIONS_EXIT_OK);
	assert_non_null(strstr(msg, "--max-connections"));
	assert_non_null(strstr(msg, "--daemon"));
	assert_int_equal(PARSE(&o, msg, "-V"), OPTIONS_EXIT_OK);
	assert_non_null(strstr(msg, AESD_VERSION));
}

static void parse_number_bounds(void **state)
{
	unsigned long v = 42;

	(void)state;
	assert_int_equal(parse_number("7", 7, 7, &v), 0);
	assert_int_equal(v, 7);
	assert_int_equal(parse_number("6", 7, 8, &v), -1);
	assert_int_equal(parse_number("9", 7, 8, &v), -1);
	assert_int_equal(parse_number("18446744073709551616", 0, ~0UL, &v),
			 -1);
	assert_int_equal(v, 7);	/* untouched on error */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(defaults_are_the_original_design),
		cmocka_unit_test(short_and_long_forms),
		cmocka_unit_test(port_out_of_range_is_a_usage_error),
		cmocka_unit_test(other_numbers_are_range_checked),
		cmocka_unit_test(missing_value_is_a_usage_error),
		cmocka_unit_test(junk_is_a_usage_error),
		cmocka_unit_test(help_and_version_exit_successfully),
		cmocka_unit_test(parse_number_bounds),
	};

	return cmocka_run_group_tests_name("options", tests, NULL, NULL);
}
