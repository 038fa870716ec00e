#include "pgrouter/app/runtime.hpp"

#include <boost/asio/ssl/context.hpp>

namespace pgrouter::app {

namespace {
std::shared_ptr<asio::ssl::context> make_tls(bool server, const std::string& cert, const std::string& key,
                                             const std::string& ca, config::SslMode mode,
                                             std::vector<std::string>& errors, const char* side) {
    auto ctx = std::make_shared<asio::ssl::context>(server ? asio::ssl::context::tls_server
                                                           : asio::ssl::context::tls_client);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 | asio::ssl::context::no_tlsv1_1);
    boost::system::error_code ec;
    if (!cert.empty()) {
        ctx->use_certificate_chain_file(cert, ec);
        if (ec) errors.push_back(std::string(side) + "_tls_cert_file: cannot load " + cert + ": " + ec.message());
    }
    if (!key.empty()) {
        ctx->use_private_key_file(key, asio::ssl::context::pem, ec);
        if (ec) errors.push_back(std::string(side) + "_tls_key_file: cannot load " + key + ": " + ec.message());
    }
    if (!ca.empty()) {
        ctx->load_verify_file(ca, ec);
        if (ec) errors.push_back(std::string(side) + "_tls_ca_file: cannot load " + ca + ": " + ec.message());
    }
    bool verify = mode == config::SslMode::verify_ca || mode == config::SslMode::verify_full;
    if (server) {
        // Ask for a client certificate when a CA is configured (auth_type cert / hba cert).
        if (verify)
            ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
        else if (!ca.empty())
            ctx->set_verify_mode(asio::ssl::verify_peer);
    } else if (verify) {
        ctx->set_verify_mode(asio::ssl::verify_peer);
    }
    return ctx;
}
}  // namespace

std::shared_ptr<const Snapshot> build_snapshot(std::shared_ptr<const config::Config> cfg, std::uint64_t generation,
                                               std::vector<std::string>& errors) {
    auto snap = std::make_shared<Snapshot>();
    snap->generation = generation;
    auto& st = cfg->settings;
    if (!st.auth_file.empty()) {
        auto users = auth::load_userlist(st.auth_file);
        for (auto& e : users.errors) errors.push_back(st.auth_file + ": " + e);
        snap->users = std::move(users.users);
    }
    if (st.auth_type == config::AuthType::hba) {
        auto hba = auth::load_hba(st.auth_hba_file);
        for (auto& e : hba.errors) errors.push_back(st.auth_hba_file + ": " + e);
        snap->hba = std::move(hba.rules);
    }
    auto& tls = cfg->tls;
    if (tls.client_tls_sslmode != config::SslMode::disable) {
        if (tls.client_tls_cert_file.empty() || tls.client_tls_key_file.empty())
            errors.push_back("tls.client_tls_sslmode: needs client_tls_cert_file and client_tls_key_file");
        else
            snap->client_tls = make_tls(true, tls.client_tls_cert_file, tls.client_tls_key_file, tls.client_tls_ca_file,
                                        tls.client_tls_sslmode, errors, "client");
    }
    if (tls.server_tls_sslmode != config::SslMode::disable)
        snap->server_tls = make_tls(false, tls.server_tls_cert_file, tls.server_tls_key_file, tls.server_tls_ca_file,
                                    tls.server_tls_sslmode, errors, "server");
    snap->config = std::move(cfg);
    return snap;
}

}  // namespace pgrouter::app

namespace pgrouter::app {
std::shared_ptr<routing::Cluster> Runtime::cluster(const std::string& name) const {
    auto m = clusters();
    auto it = m->find(name);
    return it == m->end() ? nullptr : it->second;
}
}  // namespace pgrouter::app
