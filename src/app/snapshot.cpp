#include "pgrouter/app/runtime.hpp"

#include <boost/asio/ssl/context.hpp>

#include <cmath>
#include <cstdint>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/ssl.h>
#include <strings.h>

namespace pgrouter::app {

namespace {
// Allowed protocol versions (validated when the config was loaded) and cipher lists.
void restrict_tls(SSL_CTX* ctx, const std::string& protocols, const std::string& ciphers,
                  const std::string& tls13_ciphers, std::vector<std::string>& errors, const char* side,
                  const std::string& exclude = {}) {
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
    if (!list.empty() && SSL_CTX_set_cipher_list(ctx, list.c_str()) != 1) {
        errors.push_back(std::string("tls.") + side + "_tls_ciphers: no cipher matches \"" + ciphers + "\"");
    } else if (!exclude.empty()) {
        // Key exchanges turned off (client_tls_ecdhcurve / client_tls_dheparams = none).
        auto narrowed = (list.empty() ? std::string("DEFAULT") : list) + exclude;
        if (SSL_CTX_set_cipher_list(ctx, narrowed.c_str()) != 1)
            errors.push_back(std::string("tls.") + side + "_tls_ciphers: no cipher of \"" + ciphers +
                             "\" left without the key exchanges turned off");
    }
    if (!tls13_ciphers.empty() && SSL_CTX_set_ciphersuites(ctx, tls13_ciphers.c_str()) != 1)
        errors.push_back(std::string("tls.") + side + "_tls13_ciphers: no TLS 1.3 cipher suite matches \"" +
                         tls13_ciphers + "\"");
    ERR_clear_error();
}

bool is(const std::string& v, const char* word) { return strcasecmp(v.c_str(), word) == 0; }

// client_tls_ecdhcurve / client_tls_dheparams: what restrict_tls must leave out of the
// cipher list (":!kECDHE", ":!kDHE").
std::string excluded_key_exchanges(const config::TlsSettings& tls) {
    std::string out;
    if (is(tls.client_tls_ecdhcurve, "none")) out += ":!kECDHE";
    if (is(tls.client_tls_dheparams, "none")) out += ":!kDHE";
    return out;
}

// The groups and DH parameters themselves; after restrict_tls (the security level set
// by the cipher list decides whether 1024-bit DH is allowed).
void key_exchange(SSL_CTX* ctx, const config::TlsSettings& tls, std::vector<std::string>& errors) {
    auto& curve = tls.client_tls_ecdhcurve;
    if (!curve.empty() && !is(curve, "auto") && !is(curve, "none") && SSL_CTX_set1_groups_list(ctx, curve.c_str()) != 1)
        errors.push_back("tls.client_tls_ecdhcurve: no curve (group) named \"" + curve + "\"");
    auto& dh = tls.client_tls_dheparams;
    if (is(dh, "auto")) {
        SSL_CTX_set_dh_auto(ctx, 1);
    } else if (is(dh, "legacy")) {
        // The 1024-bit MODP group of RFC 2409 (Oakley group 2), generator 2.
        EVP_PKEY* pkey = nullptr;
        BIGNUM* p = BN_get_rfc2409_prime_1024(nullptr);
        BIGNUM* g = BN_new();
        OSSL_PARAM_BLD* bld = OSSL_PARAM_BLD_new();
        OSSL_PARAM* params = nullptr;
        EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_from_name(nullptr, "DH", nullptr);
        if (p && g && bld && pctx && BN_set_word(g, 2) && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_FFC_P, p) &&
            OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_FFC_G, g) && (params = OSSL_PARAM_BLD_to_param(bld)) &&
            EVP_PKEY_fromdata_init(pctx) == 1 && EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_KEY_PARAMETERS, params) == 1) {
            if (SSL_CTX_set0_tmp_dh_pkey(ctx, pkey) == 1)
                pkey = nullptr;  // owned by ctx now
            else
                errors.push_back("tls.client_tls_dheparams: OpenSSL refuses 1024-bit DH at this security level "
                                 "(add @SECLEVEL=0 to client_tls_ciphers, or use auto)");
        } else {
            errors.push_back("tls.client_tls_dheparams: cannot build the 1024-bit DH parameters");
        }
        EVP_PKEY_free(pkey);
        EVP_PKEY_CTX_free(pctx);
        OSSL_PARAM_free(params);
        OSSL_PARAM_BLD_free(bld);
        BN_free(g);
        BN_free(p);
    }
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
    if (!st.auth_ident_file.empty()) {
        auto ident = auth::load_ident(st.auth_ident_file);
        for (auto& e : ident.errors) errors.push_back(st.auth_ident_file + ": " + e);
        snap->ident = std::move(ident.maps);
    }
    if (st.auth_type == config::AuthType::hba) {
        auto hba = auth::load_hba(st.auth_hba_file);
        for (auto& e : hba.errors) errors.push_back(st.auth_hba_file + ": " + e);
        for (auto& rule : hba.rules)
            if (!rule.map.empty() && !snap->ident.count(rule.map))
                errors.push_back(st.auth_hba_file + ": line " + std::to_string(rule.line) + ": ident map \"" +
                                 rule.map + "\" is not in auth_ident_file" +
                                 (st.auth_ident_file.empty() ? " (none is set)" : " " + st.auth_ident_file));
        snap->hba = std::move(hba.rules);
    }
    auto& tls = cfg->tls;
    if (tls.client_tls_sslmode != config::SslMode::disable) {
        if (tls.client_tls_cert_file.empty() || tls.client_tls_key_file.empty())
            errors.push_back("tls.client_tls_sslmode: needs client_tls_cert_file and client_tls_key_file");
        else
            snap->client_tls = make_tls(true, tls.client_tls_cert_file, tls.client_tls_key_file, tls.client_tls_ca_file,
                                        tls.client_tls_sslmode, errors, "client");
        if (snap->client_tls) {
            restrict_tls(snap->client_tls->native_handle(), tls.client_tls_protocols, tls.client_tls_ciphers,
                         tls.client_tls13_ciphers, errors, "client", excluded_key_exchanges(tls));
            key_exchange(snap->client_tls->native_handle(), tls, errors);
        }
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
