// Logging setup: text or JSON lines (log_format) to stderr or `logfile`, the
// file reopened on SIGHUP so logrotate can move it away.
#pragma once

#include "pgrouter/config/config.hpp"

#include <string>

namespace pgrouter::app {

// Installs the "pgrouter" default logger. Returns "" or why the logfile cannot
// be opened (the logger then writes to stderr).
std::string setup_logging(const config::Settings& st, int verbosity);

// SIGHUP: reopens the logfile at its configured path (after logrotate's `mv`,
// new lines go to a new file) and applies a changed logfile or log_format.
// Never replaces the logger itself, so threads logging meanwhile are safe.
// Returns "" or why the file cannot be opened (the old one is kept then).
std::string reopen_logs(const config::Settings& st);

// The log level from `verbose` and the command line's -v / -q (RELOAD, SET verbose).
void apply_log_level(const config::Settings& st);

// One JSON string's contents: quotes, backslashes and control characters
// escaped, invalid UTF-8 replaced by U+FFFD. Appends to `out`.
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace pgrouter::app
