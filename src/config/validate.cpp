// Whole-config checks shared by both loaders: cross references, combinations of
// keys, and the files the config names (resolved to absolute paths, then read-tested).
#include "pgrouter/config/config.hpp"
#include "pgrouter/auth/auth.hpp"

#include <filesystem>

#include <grp.h>

namespace pgrouter::config {

namespace {

namespace fs = std::filesystem;

bool is_reserved_database(const std::string& name) {
    return name == "pgbouncer" || name == "pgrouter";  // the admin console
}

bool verifies_peer(SslMode m) { return m == SslMode::verify_ca || m == SslMode::verify_full; }

class Checker {
public:
    Checker(Config& cfg, const KeySources& sources, const std::vector<Problem>& already)
        : cfg_(cfg), sources_(sources), already_(already) {}

    std::vector<Problem> run() {
        check_listen();
        check_auth();
        check_tls();
        check_files();
        for (auto& [name, cluster] : cfg_.clusters) check_cluster(name, cluster);
        for (auto& [name, db] : cfg_.databases) check_database(name, db);
        if (cfg_.fallback_database) check_database("*", *cfg_.fallback_database);
        for (auto& [name, user] : cfg_.users) user.name = name;
        check_auth_dbname("pgrouter.auth_dbname", cfg_.settings.auth_dbname);
        return std::move(problems_);
    }

private:
    // The source of `canonical` or of its nearest enclosing section.
    Problem place(const std::string& canonical) const {
        for (std::string key = canonical;;) {
            if (auto it = sources_.find(key); it != sources_.end()) {
                const KeySource& s = it->second;
                return {s.file, s.line, s.key + canonical.substr(key.size()), ""};
            }
            auto dot = key.rfind('.');
            if (dot == std::string::npos) return {cfg_.path, 0, canonical, ""};
            key.resize(dot);
        }
    }

    void error(const std::string& canonical, std::string reason) {
        Problem p = place(canonical);
        if (reported(p.key)) return;
        p.reason = std::move(reason);
        problems_.push_back(std::move(p));
    }

    // A bad value of `key` or of a key inside it was reported: say nothing more of it.
    bool reported(const std::string& key) const {
        for (const Problem& p : already_)
            if (!p.warning && p.key.starts_with(key) &&
                (p.key.size() == key.size() || p.key[key.size()] == '.'))
                return true;
        return false;
    }

    // Relative to the directory of the file that set the key, else of the config.
    std::string resolve(const std::string& canonical, const std::string& path) const {
        fs::path p(path);
        if (p.is_relative()) {
            auto it = sources_.find(canonical);
            const std::string& file = it != sources_.end() ? it->second.file : cfg_.path;
            p = fs::path(file).parent_path() / p;
        }
        std::error_code ec;
        fs::path abs = fs::absolute(p, ec);
        return (ec ? p : abs).lexically_normal().string();
    }

    void check_file(const std::string& canonical, std::string& path) {
        if (path.empty()) return;
        path = resolve(canonical, path);
        std::string why;
        if (!read_config_file(path, why)) error(canonical, why);
    }

    void check_files() {
        Settings& s = cfg_.settings;
        TlsSettings& t = cfg_.tls;
        check_file("pgrouter.auth_file", s.auth_file);
        check_file("pgrouter.auth_hba_file", s.auth_hba_file);
        check_file("pgrouter.auth_ident_file", s.auth_ident_file);
        check_file("tls.client_tls_cert_file", t.client_tls_cert_file);
        check_file("tls.client_tls_key_file", t.client_tls_key_file);
        check_file("tls.client_tls_ca_file", t.client_tls_ca_file);
        check_file("tls.server_tls_ca_file", t.server_tls_ca_file);
        check_file("tls.server_tls_cert_file", t.server_tls_cert_file);
        check_file("tls.server_tls_key_file", t.server_tls_key_file);
        for (auto& [name, c] : cfg_.clusters)
            check_file("clusters." + name + ".discovery.consul_token_file",
                       c.discovery.consul_token_file);
    }

    void check_listen() {
        const Settings& s = cfg_.settings;
        if (s.listen_addr.empty() && s.unix_socket_dir.empty())
            error("pgrouter.listen_addr", "nothing to listen on: listen_addr and unix_socket_dir are both empty");
        if (!s.unix_socket_group.empty() && !::getgrnam(s.unix_socket_group.c_str()))
            error("pgrouter.unix_socket_group", "no group named \"" + s.unix_socket_group + "\"");
    }

    void check_auth() {
        const Settings& s = cfg_.settings;
        if (s.auth_type == AuthType::hba && s.auth_hba_file.empty())
            error("pgrouter.auth_type", "auth_type \"hba\" requires auth_hba_file");
        if (s.auth_type == AuthType::ldap) {
            std::string why;
            auto options = auth::split_options(s.auth_ldap_options, why);
            if (!options || !auth::parse_ldap_options(*options, why)) error("pgrouter.auth_ldap_options", why);
        }
        if (s.auth_type == AuthType::pam && s.auth_pam_service.empty())
            error("pgrouter.auth_pam_service", "auth_type \"pam\" requires a PAM service name");
        if (s.auth_type == AuthType::cert && !verifies_peer(cfg_.tls.client_tls_sslmode))
            error("pgrouter.auth_type",
                  "auth_type \"cert\" requires client_tls_sslmode verify-ca or verify-full");
    }

    void check_tls() {
        const TlsSettings& t = cfg_.tls;
        if (t.client_tls_sslmode != SslMode::disable &&
            (t.client_tls_cert_file.empty() || t.client_tls_key_file.empty()))
            error("tls.client_tls_sslmode", std::string("client_tls_sslmode \"") +
                                                to_string(t.client_tls_sslmode) +
                                                "\" requires client_tls_cert_file and client_tls_key_file");
        if (verifies_peer(t.client_tls_sslmode) && t.client_tls_ca_file.empty())
            error("tls.client_tls_sslmode", std::string("client_tls_sslmode \"") +
                                                to_string(t.client_tls_sslmode) +
                                                "\" requires client_tls_ca_file");
        if (t.server_tls_cert_file.empty() != t.server_tls_key_file.empty())
            error(t.server_tls_cert_file.empty() ? "tls.server_tls_key_file" : "tls.server_tls_cert_file",
                  "server_tls_cert_file and server_tls_key_file must be set together");
    }

    void check_cluster(const std::string& name, ClusterConfig& c) {
        c.name = name;
        const std::string key = "clusters." + name;
        const DiscoveryConfig& d = c.discovery;
        if (d.type == DiscoveryType::static_ && !c.primary)
            error(key + ".primary", "a cluster with static discovery needs a primary");
        if (d.type == DiscoveryType::patroni && d.patroni_urls.empty())
            error(key + ".discovery.patroni_urls", "patroni discovery needs at least one URL");
        if (d.type == DiscoveryType::consul && d.consul_url.empty())
            error(key + ".discovery.consul_url", "consul discovery needs consul_url");
        if (d.type == DiscoveryType::consul && d.consul_service.empty())
            error(key + ".discovery.consul_service", "consul discovery needs consul_service");
    }

    void check_database(const std::string& name, DatabaseConfig& db) {
        db.name = name;
        const std::string key = "databases." + name;
        bool fallback = name == "*";
        if (db.dbname.empty() && !fallback) db.dbname = name;  // "*": the client's database
        if (is_reserved_database(name))
            error(key, "the name \"" + name + "\" is reserved for the admin console");
        if (!db.cluster.empty() && !db.host.empty())
            error(key + ".host", "a database takes either cluster or host, not both");
        else if (db.cluster.empty() && db.host.empty())
            error(key, "needs cluster or host");
        if (!db.cluster.empty() && !cfg_.clusters.contains(db.cluster))
            error(key + ".cluster", "unknown cluster \"" + db.cluster + "\"");
        if (db.cluster.empty() && db.route != Route::auto_)
            error(key + ".route", "route applies only to a database with a cluster");
        check_auth_dbname(key + ".auth_dbname", db.auth_dbname);
    }

    // auth_dbname names an entry of [databases] (any name when "*" is there).
    void check_auth_dbname(const std::string& key, const std::string& name) {
        if (name.empty() || cfg_.databases.contains(name) || cfg_.fallback_database) return;
        error(key, "no database named \"" + name + "\" in the configuration");
    }

    Config& cfg_;
    const KeySources& sources_;
    const std::vector<Problem>& already_;
    std::vector<Problem> problems_;
};

}  // namespace

std::vector<Problem> validate(Config& cfg, const KeySources& sources,
                              const std::vector<Problem>& already) {
    return Checker(cfg, sources, already).run();
}

}  // namespace pgrouter::config
