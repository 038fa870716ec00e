// The pgbouncer.ini loader: PgBouncer's line format (sections, `key = value`, ; and #
// comments, %include), its libpq-style [databases] / [users] lines, and its key names
// mapped onto the same model as the TOML file. Keys pgrouter does not implement are
// warnings naming the key; bad values of known keys are errors.
#include "pgrouter/config/config.hpp"
#include "pgrouter/session/params.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <filesystem>

namespace pgrouter::config {

namespace {

constexpr int max_include_depth = 10;  // as PgBouncer

// PgBouncer [pgbouncer] keys with no pgrouter equivalent: accepted with a warning.
constexpr std::string_view unsupported_keys[] = {
    "cancel_wait_timeout", "conffile", "dns_max_ttl",
    "dns_nxdomain_ttl", "dns_zone_check_period", "job_name",
    "peer_id", "pkt_buf", "resolv_conf", "sbuf_loopcnt",
    "service_name", "so_reuseport", "syslog",
    "syslog_facility", "syslog_ident",
    "user", "logfile_rotate", "log_rotate_age", "stats_users_prefix"};

// Why some of them need nothing from pgrouter (else: "not supported by pgrouter").
struct Why {
    std::string_view key, reason;
};
constexpr Why why_ignored[] = {
    {"dns_max_ttl", "pgrouter resolves host names at each new server connection and caches nothing"},
    {"dns_nxdomain_ttl", "pgrouter resolves host names at each new server connection and caches nothing"},
    {"dns_zone_check_period", "pgrouter resolves host names at each new server connection and caches nothing"},
    {"resolv_conf", "pgrouter resolves host names with the system resolver (/etc/resolv.conf)"},
    {"so_reuseport", "pgrouter's own workers share the port; a second pgrouter cannot"},
    {"peer_id", "pgrouter runs one process with several workers: no peers to forward cancels to"},
    {"pkt_buf", "pgrouter sizes its buffers itself"},
    {"sbuf_loopcnt", "pgrouter sizes its buffers itself"},
    {"cancel_wait_timeout", "pgrouter forwards a cancel request at once on a connection of its own, never queued"},
    {"user", "start pgrouter as the user it should run as (systemd User=)"},
    {"syslog", "pgrouter logs to logfile or stderr (journald under systemd)"},
    {"syslog_facility", "pgrouter logs to logfile or stderr (journald under systemd)"},
    {"syslog_ident", "pgrouter logs to logfile or stderr (journald under systemd)"},
};

std::string ignored_because(std::string_view key) {
    for (const auto& w : why_ignored)
        if (w.key == key) return "ignored: " + std::string(w.reason);
    return "not supported by pgrouter, ignored";
}

template <std::size_t N>
bool listed(const std::string_view (&list)[N], std::string_view key) {
    return std::find(std::begin(list), std::end(list), key) != std::end(list);
}

bool space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && space(s.front())) s.remove_prefix(1);
    while (!s.empty() && space(s.back())) s.remove_suffix(1);
    return s;
}

struct Pair {
    std::string key, value;
};

// A quoted value after its opening quote: '' is a quote. Returns the position after
// the closing quote, or npos when it is missing.
std::size_t read_quoted(std::string_view s, std::size_t i, std::string& out) {
    for (; i < s.size(); ++i) {
        if (s[i] != '\'') {
            out += s[i];
        } else if (i + 1 < s.size() && s[i + 1] == '\'') {
            out += '\'';
            ++i;
        } else {
            return i + 1;
        }
    }
    return std::string_view::npos;
}

// libpq-style "k=v k='quoted ''v'''", as PgBouncer's [databases] and [users] lines.
std::optional<std::vector<Pair>> parse_connstring(std::string_view s, std::string& why) {
    std::vector<Pair> out;
    std::size_t i = 0;
    auto skip_ws = [&] { while (i < s.size() && space(s[i])) ++i; };
    for (skip_ws(); i < s.size(); skip_ws()) {
        std::size_t start = i;
        while (i < s.size() && s[i] != '=' && !space(s[i])) ++i;
        Pair p{std::string(s.substr(start, i - start)), {}};
        skip_ws();
        if (p.key.empty() || i >= s.size() || s[i] != '=') {
            why = "syntax error: expected key=value at \"" + std::string(s.substr(start)) + "\"";
            return std::nullopt;
        }
        ++i;
        skip_ws();
        if (i < s.size() && s[i] == '\'') {
            i = read_quoted(s, i + 1, p.value);
            if (i == std::string_view::npos) {
                why = "unterminated quote in the value of " + p.key;
                return std::nullopt;
            }
        } else {
            std::size_t v = i;
            while (i < s.size() && !space(s[i])) ++i;
            p.value = s.substr(v, i - v);
        }
        if (p.value.empty()) {
            why = "empty value for " + p.key;
            return std::nullopt;
        }
        out.push_back(std::move(p));
    }
    return out;
}

// PgBouncer's defaults where they differ from pgrouter's and the difference matters
// to a migrated setup: pool mode, auth, and what is exposed (no TCP listener, no admin).
void apply_pgbouncer_defaults(Settings& s) {
    s.pool_mode = PoolMode::session;
    s.auth_type = AuthType::md5;
    s.max_client_conn = 100;
    s.listen_addr.clear();
    s.admin_users.clear();
}

class IniLoader {
public:
    explicit IniLoader(const std::string& path) : top_(path) {
        cfg_.path = path;
        apply_pgbouncer_defaults(cfg_.settings);
    }

    LoadResult load(std::string_view text) {
        parse_text(text, top_, 0);
        if (!saw_main_) add({top_, 0}, "pgbouncer", "missing [pgbouncer] section");
        fill_unix_socket_hosts();
        auto more = validate(cfg_, sources_, problems_);
        problems_.insert(problems_.end(), more.begin(), more.end());
        LoadResult r;
        bool errors = std::any_of(problems_.begin(), problems_.end(),
                                  [](const Problem& p) { return !p.warning; });
        if (!errors) r.config = std::move(cfg_);
        r.problems = std::move(problems_);
        return r;
    }

private:
    struct Pos {
        std::string file;
        int line = 0;
    };

    void add(const Pos& at, std::string key, std::string reason, bool warning = false) {
        problems_.push_back({at.file, at.line, std::move(key), std::move(reason), warning});
    }

    void note(const std::string& canonical, const Pos& at, std::string shown) {
        sources_[canonical] = {at.file, at.line, std::move(shown)};
    }

    void parse_text(std::string_view text, const std::string& file, int depth) {
        if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // UTF-8 BOM
        Pos at{file, 0};
        while (!text.empty()) {
            auto nl = text.find('\n');
            std::string_view line = trim(text.substr(0, nl));
            text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
            ++at.line;
            parse_line(line, at, depth);
        }
    }

    void parse_line(std::string_view line, const Pos& at, int depth) {
        if (line.empty() || line[0] == ';' || line[0] == '#') return;
        if (line.starts_with("%include") && line.size() > 8 && space(line[8]))
            return include(trim(line.substr(8)), at, depth);
        if (line[0] == '[') {
            if (line.back() != ']') return add(at, "", "syntax error: expected ']' in section header");
            return start_section(trim(line.substr(1, line.size() - 2)), at);
        }
        auto eq = line.find('=');
        if (eq == std::string_view::npos || trim(line.substr(0, eq)).empty())
            return add(at, "", "syntax error: expected key = value");
        key_value(std::string(trim(line.substr(0, eq))), std::string(trim(line.substr(eq + 1))), at);
    }

    void include(std::string_view name, const Pos& at, int depth) {
        if (depth >= max_include_depth)
            return add(at, "%include", "include nesting too deep (more than " +
                                           std::to_string(max_include_depth) + " levels)");
        std::filesystem::path p(name);
        if (p.is_relative()) p = std::filesystem::path(at.file).parent_path() / p;
        std::string why;
        auto text = read_config_file(p.string(), why);
        if (!text) return add(at, "%include", why);
        // As in PgBouncer, the included text continues the current section, and a
        // section it opens stays open after it.
        parse_text(*text, p.string(), depth + 1);
    }

    void start_section(std::string_view name, const Pos& at) {
        section_ = std::string(name);
        if (name == "pgbouncer") {
            saw_main_ = true;
            note("pgrouter", at, "pgbouncer");
            note("tls", at, "pgbouncer");
        } else if (name == "peers") {
            add(at, "peers", "pgrouter does not support peers; section ignored", true);
        } else if (name != "databases" && name != "users") {
            add(at, std::string(name), "unknown section");
        }
    }

    void key_value(const std::string& key, const std::string& value, const Pos& at) {
        if (section_ == "pgbouncer") return pgbouncer_key(key, value, at);
        if (section_ == "databases") return database_line(key, value, at);
        if (section_ == "users") return user_line(key, value, at);
        if (section_.empty()) add(at, key, "key outside of any section");
        // else: [peers] or an unknown section, already reported
    }

    void pgbouncer_key(const std::string& key, const std::string& value, const Pos& at) {
        std::string shown = "pgbouncer." + key;
        bool tls = key.starts_with("client_tls") || key.starts_with("server_tls");
        auto v = SettingValue::text(value);
        if (key == "tcp_user_timeout") {
            // PgBouncer counts it in milliseconds; pgrouter, like every duration, in seconds.
            std::int64_t ms = 0;
            auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
            if (value.empty() || ec != std::errc{} || end != value.data() + value.size())
                return add(at, shown, "expected a number of milliseconds, got \"" + value + "\"");
            v = SettingValue{static_cast<double>(ms) / 1000.0};
        }
        if (key == "track_extra_parameters") {
            // PgBouncer tracks any name the server reports; pgrouter a fixed set. Names
            // outside it are dropped with a warning rather than refusing the file.
            std::vector<std::string> keep;
            for (auto& name : split_list(value)) {
                if (session::tracked_index(name)) {
                    keep.push_back(name);
                    continue;
                }
                SetResult one = set_setting(cfg_, "", key, SettingValue{std::vector<std::string>{name}});
                add(at, shown, one.reason + "; ignored", true);
            }
            v = SettingValue{std::move(keep)};
        }
        SetResult r = set_setting(cfg_, "", key, v);
        if (r.ok()) return note((tls ? "tls." : "pgrouter.") + key, at, shown);
        if (r.status == SetStatus::bad_value) return add(at, shown, r.reason);
        if (listed(unsupported_keys, key)) return add(at, shown, ignored_because(key), true);
        add(at, shown, "unknown key, ignored", true);
    }

    void database_line(const std::string& name, const std::string& connstr, const Pos& at) {
        bool fallback = name == "*";
        DatabaseConfig& db = fallback ? cfg_.fallback_database.emplace() : cfg_.databases[name];
        db = DatabaseConfig{};  // a repeated name replaces the earlier line, as in PgBouncer
        std::string prefix = "databases." + name;
        note(prefix, at, prefix);
        std::string why;
        auto pairs = parse_connstring(connstr, why);
        if (!pairs) return add(at, prefix, why);
        for (auto& [k, v] : *pairs) {
            std::string key = k == "reserve_pool" ? "reserve_pool_size" : k;
            note(prefix + "." + key, at, prefix + "." + k);
            SetResult r = set_database_key(db, key, SettingValue::text(v));
            if (r.ok()) continue;
            if (r.status == SetStatus::bad_value)
                add(at, prefix + "." + k, r.reason);
            else
                add(at, prefix + "." + k, "unknown parameter");
        }
    }

    void user_line(const std::string& name, const std::string& params, const Pos& at) {
        UserConfig& user = cfg_.users[name];
        user = UserConfig{};
        std::string prefix = "users." + name;
        note(prefix, at, prefix);
        std::string why;
        auto pairs = parse_connstring(params, why);
        if (!pairs) return add(at, prefix, why);
        for (auto& [k, v] : *pairs) {
            SetResult r = set_user_key(user, k, SettingValue::text(v));
            if (r.ok()) continue;
            if (r.status == SetStatus::bad_value)
                add(at, prefix + "." + k, r.reason);
            else
                add(at, prefix + "." + k, "unknown parameter");
        }
    }

    // PgBouncer: a database line without host= uses the unix socket in unix_socket_dir.
    void fill_unix_socket_hosts() {
        auto fill = [this](DatabaseConfig& db) {
            if (db.host.empty() && db.cluster.empty()) db.host = cfg_.settings.unix_socket_dir;
        };
        for (auto& [name, db] : cfg_.databases) fill(db);
        if (cfg_.fallback_database) fill(*cfg_.fallback_database);
    }

    std::string top_;
    std::string section_;
    bool saw_main_ = false;
    Config cfg_;
    KeySources sources_;
    std::vector<Problem> problems_;
};

}  // namespace

LoadResult load_ini_string(std::string_view text, const std::string& path_for_messages) {
    return IniLoader(path_for_messages).load(text);
}

}  // namespace pgrouter::config
