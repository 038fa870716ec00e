#include "pgrouter/app/runtime.hpp"

#include <boost/asio/ssl/context.hpp>

#include <cmath>
#include <cstdint>

#include <openssl/err.h>
#include <openssl/ssl.h>

namespace pgrouter::app {

namespace {
// Allowed protocol versions (validated when the config was loaded) and cipher lists.
void restrict_tls(SSL_CTX* ctx, const std::string& protocols, const std::string& ciphers,
                  const std::string& tls13_ciphers, std::vector<std::string>& errors, const char* side) {
    std::string why;
    unsigned allowed = config::parse_tls_protocols(protocols, why).value_or(config::tls1_2 | config::tls1_3);
    constexpr int version[] = {TLS1_VERSION, TLS1_1_VERSION, TLS1_2_VERSION, TLS1_3_VERSION};
    constexpr std::uint64_t none[] = {SSL_OP_NO_TLSv1, SSL_OP_NO_TLSv1_1, SSL_OP_NO_TLSv1_2, SSL_OP_NO_TLSv1_3};
    int lo = -1, hi = -1;
    for (int i = 0; i < 4; ++i)
        if (allowed & (1u << i)) {
            if (lo < 0) lo = i;
            hi = i;
        }
    SSL_CTX_set_min_proto_version(ctx, version[lo]);
    SSL_CTX_set_max_proto_version(ctx, version[hi]);
    for (int i = lo; i <= hi; ++i)  // a version left out between two allowed ones
        if (!(allowed & (1u << i))) SSL_CTX_set_options(ctx, none[i]);
    auto list = config::openssl_cipher_list(ciphers);
    if (!list.empty() && SSL_CTX_set_cipher_list(ctx, list.c_str()) != 1)
        errors.push_back(std::string("tls.") + side + "_tls_ciphers: no cipher matches \"" + ciphers + "\"");
    if (!tls13_ciphers.empty() && SSL_CTX_set_ciphersuites(ctx, tls13_ciphers.c_str()) != 1)
        errors.push_back(std::string("tls.") + side + "_tls13_ciphers: no TLS 1.3 cipher suite matches \"" +
                         tls13_ciphers + "\"");
    ERR_clear_error();
}

std::shared_ptr<asio::ssl::context> make_tls(bool server, const std::string& cert, const std::string& key,
                                             const std::string& ca, config::SslMode mode,
                                             std::vector<std::string>& errors, const char* side) {
    auto ctx = std::make_shared<asio::ssl::context>(server ? asio::ssl::context::tls_server
                                                           : asio::ssl::context::tls_client);
    ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                     asio::ssl::context::no_sslv3);
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
        if (snap->client_tls)
            restrict_tls(snap->client_tls->native_handle(), tls.client_tls_protocols, tls.client_tls_ciphers,
                         tls.client_tls13_ciphers, errors, "client");
    }
    if (tls.server_tls_sslmode != config::SslMode::disable) {
        snap->server_tls = make_tls(false, tls.server_tls_cert_file, tls.server_tls_key_file, tls.server_tls_ca_file,
                                    tls.server_tls_sslmode, errors, "server");
        restrict_tls(snap->server_tls->native_handle(), tls.server_tls_protocols, tls.server_tls_ciphers,
                     tls.server_tls13_ciphers, errors, "server");
    }
    snap->tcp.keepalive = st.tcp_keepalive;
    snap->tcp.keepcnt = st.tcp_keepcnt;
    snap->tcp.keepidle = st.tcp_keepidle;
    snap->tcp.keepintvl = st.tcp_keepintvl;
    snap->tcp.user_timeout_ms = static_cast<unsigned>(std::ceil(st.tcp_user_timeout * 1000.0));
    snap->tcp.socket_buffer = st.tcp_socket_buffer;
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
