#include "pgrouter/app/runtime.hpp"
#include "pgrouter/pool/pool.hpp"
#include "pgrouter/routing/cluster.hpp"

namespace pgrouter::pool {

namespace {
bool same_target(const Target& a, const Target& b) {
    auto secret = [](const Target& t) { return t.credential ? t.credential->secret : std::string("\x01none"); };
    return a.host == b.host && a.port == b.port && a.dbname == b.dbname && a.user == b.user && secret(a) == secret(b) &&
           a.startup_params == b.startup_params && a.connect_query == b.connect_query &&
           a.session_attrs == b.session_attrs;
}
}  // namespace

void apply_config(Pool& pool, const app::Snapshot& snap, const config::DatabaseConfig& db,
                  const std::optional<auth::Credential>& queried) {
    auto& cfg = *snap.config;
    auto& st = cfg.settings;
    const std::string& user = pool.user();
    auto target = std::make_shared<Target>();
    if (!db.cluster.empty()) {
        // A replica's pool keeps its address; the database's own pool follows the primary.
        std::string err;
        std::optional<config::HostPort> addr;
        if (!pool.backend().empty()) addr = routing::parse_host_port(pool.backend(), err);
        else if (auto c = pool.runtime().cluster(db.cluster)) addr = c->view()->primary;
        else if (auto c = cfg.clusters.find(db.cluster); c != cfg.clusters.end()) addr = c->second.primary;
        if (addr) {
            target->host = addr->host;
            target->port = addr->port;
        }
    } else {
        target->host = db.host;
        target->port = db.port;
        if (db.host.find(',') != std::string::npos) target->hosts = config::split_hosts(db.host);
        target->load_balance = db.load_balance_hosts;
    }
    target->session_attrs = db.target_session_attrs;
    target->dbname = db.dbname.empty() ? db.name : db.dbname;
    for (auto [name, value] : {std::pair{"client_encoding", &db.client_encoding}, std::pair{"datestyle", &db.datestyle},
                               std::pair{"timezone", &db.timezone}, std::pair{"application_name", &db.application_name}})
        if (!value->empty()) target->startup_params.emplace_back(name, *value);
    target->connect_query = db.connect_query;
    target->user = db.user.empty() ? user : db.user;
    if (!db.password.empty()) {
        target->credential = auth::Credential{target->user, db.password, auth::classify_secret(db.password)};
    } else if (auto u = snap.users.find(target->user); u != snap.users.end()) {
        target->credential = u->second;
    } else if (queried) {
        target->credential = queried;
    } else if (auto old = pool.target(); old && old->credential) {
        target->credential = old->credential;  // found by auth_query earlier
    }
    auto old = pool.target();
    target->generation = old && same_target(*old, *target) ? old->generation : pool.runtime().next_id.fetch_add(1);
    static const config::UserConfig no_user;
    auto u = cfg.users.find(user);
    const config::UserConfig& uc = u != cfg.users.end() ? u->second : no_user;
    // The user's value, else the database's, else the global one (-1 = not set).
    auto pick = [](auto user_value, auto db_value, auto global) {
        return user_value >= 0 ? user_value : db_value >= 0 ? db_value : global;
    };
    Settings ps;
    ps.pool_size = uc.pool_size >= 0 ? uc.pool_size : config::effective_pool_size(cfg, db);
    ps.min_pool_size = db.min_pool_size >= 0 ? db.min_pool_size : st.min_pool_size;
    ps.reserve_pool_size = pick(uc.reserve_pool_size, db.reserve_pool_size, st.reserve_pool_size);
    ps.query_wait_timeout = pick(uc.query_wait_timeout, db.query_wait_timeout, st.query_wait_timeout);
    ps.query_timeout = pick(uc.query_timeout, db.query_timeout, st.query_timeout);
    ps.idle_transaction_timeout = pick(uc.idle_transaction_timeout, db.idle_transaction_timeout, st.idle_transaction_timeout);
    ps.transaction_timeout = pick(uc.transaction_timeout, db.transaction_timeout, st.transaction_timeout);
    ps.client_idle_timeout = pick(uc.client_idle_timeout, db.client_idle_timeout, st.client_idle_timeout);
    ps.reserve_pool_timeout = st.reserve_pool_timeout;
    ps.server_connect_timeout = st.server_connect_timeout;
    ps.server_login_retry = st.server_login_retry;
    ps.server_lifetime = db.server_lifetime >= 0 ? db.server_lifetime : st.server_lifetime;
    ps.server_idle_timeout = st.server_idle_timeout;
    ps.server_check_delay = st.server_check_delay;
    ps.server_check_query = st.server_check_query;
    ps.check_idle_always = !db.cluster.empty();
    ps.round_robin = st.server_round_robin;
    pool.configure(ps, target);
    int max_user = uc.max_user_connections >= 0 ? uc.max_user_connections : st.max_user_connections;
    pool.db_limit().max = db.max_db_connections >= 0 ? db.max_db_connections : st.max_db_connections;
    pool.user_limit().max = max_user;
}

void reconfigure_all(PoolRegistry& pools, const app::Snapshot& snap) {
    auto& cfg = *snap.config;
    for (auto& p : pools.all()) {
        if (auto it = cfg.databases.find(p->database()); it != cfg.databases.end()) {
            apply_config(*p, snap, it->second);
        } else if (cfg.fallback_database) {
            auto db = *cfg.fallback_database;
            db.name = p->database();
            db.dbname = p->database();
            apply_config(*p, snap, db);
        }
    }
}

}  // namespace pgrouter::pool
