// Pure authentication building blocks: auth_file (userlist.txt), MD5, SCRAM-SHA-256
// (both roles), pg_hba.conf. No I/O besides load_userlist/load_hba reading a file.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pgrouter::auth {

using Bytes = std::vector<std::uint8_t>;

// ---- auth_file -------------------------------------------------------------
enum class SecretKind { plain, md5, scram };
struct Credential {
    std::string user;
    std::string secret;  // as written in the file: plaintext, "md5<32hex>", or "SCRAM-SHA-256$..."
    SecretKind kind = SecretKind::plain;
};
SecretKind classify_secret(std::string_view secret);
struct UserListResult {
    std::map<std::string, Credential> users;
    std::vector<std::string> errors;  // "line N: reason"
};
// PgBouncer format: "user" "secret" per line; "" escapes a quote; ; and # lines are comments.
UserListResult parse_userlist(std::string_view text);
// Reads and parses the file; errors gets "cannot read FILE: reason" if unreadable.
UserListResult load_userlist(const std::string& path);

// ---- MD5 ---------------------------------------------------------------------
std::string md5_hex(std::string_view data);
// "md5" + md5_hex(password + user)
std::string md5_password_hash(std::string_view password, std::string_view user);
// What a client answers to AuthenticationMD5Password: "md5" + md5_hex(md5_hex(password+user) + salt).
// `stored` is either plaintext or an "md5..." hash.
std::string md5_client_response(std::string_view stored, std::string_view user,
                                const std::array<std::uint8_t, 4>& salt);
// Verifies a client's response against a stored plaintext or md5 secret (not SCRAM).
bool md5_verify(const Credential& cred, const std::array<std::uint8_t, 4>& salt,
                std::string_view client_response);
// Verifies a cleartext password (hba method "password") against any stored secret kind,
// in constant time. Empty secrets and empty passwords never verify.
bool cleartext_verify(const Credential& cred, std::string_view password);

// ---- SCRAM-SHA-256 ----------------------------------------------------------
struct ScramSecret {
    int iterations = 4096;
    Bytes salt;
    Bytes stored_key;  // 32 bytes
    Bytes server_key;  // 32 bytes
};
// Parses "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>".
std::optional<ScramSecret> parse_scram_secret(std::string_view);
ScramSecret make_scram_secret(std::string_view password, const Bytes& salt, int iterations);
std::string format_scram_secret(const ScramSecret&);
std::string base64_encode(const std::uint8_t* data, std::size_t n);
inline std::string base64_encode(const Bytes& b) { return base64_encode(b.data(), b.size()); }
std::optional<Bytes> base64_decode(std::string_view);
Bytes random_bytes(std::size_t n);  // OpenSSL RAND_bytes

// We are the server, verifying a client (SASL mechanism "SCRAM-SHA-256", no channel binding).
class ScramServer {
public:
    explicit ScramServer(ScramSecret secret);
    // From a plaintext password (salt random, 4096 iterations).
    // A secret made on the fly from a plain-text password (scram_iterations rounds).
    static ScramServer from_password(std::string_view password, int iterations = 4096);
    // client-first-message -> server-first-message; nullopt + error() on bad input.
    std::optional<std::string> handle_client_first(std::string_view msg);
    // client-final-message -> server-final-message ("v=..."); nullopt on bad input or wrong proof.
    std::optional<std::string> handle_client_final(std::string_view msg);
    const std::string& error() const { return error_; }
    bool proof_failed() const { return proof_failed_; }  // wrong password (vs malformed)
    // After a successful exchange: the client's ClientKey (ClientProof XOR ClientSignature),
    // which lets us log in to a server holding the same secret (SCRAM pass-through).
    const Bytes& client_key() const { return client_key_; }
    const ScramSecret& secret() const { return secret_; }
    // For tests: fix the server nonce part.
    void set_nonce_for_test(std::string nonce) { nonce_ = std::move(nonce); }

private:
    enum class State { initial, sent_first, done, failed };
    std::optional<std::string> fail(std::string reason);

    State state_ = State::initial;
    ScramSecret secret_;
    std::string nonce_;  // server part
    std::string gs2_header_;  // "n,," or "y,,": c= must carry it back
    std::string client_first_bare_, server_first_, full_nonce_;
    std::string error_;
    bool proof_failed_ = false;
    Bytes client_key_;
};

// We are the client, logging in to a server.
class ScramClient {
public:
    // With a password.
    ScramClient(std::string_view password);
    // With keys recovered from a client's SCRAM login (pass-through).
    ScramClient(Bytes client_key, Bytes server_key);
    std::string client_first();  // "n,,n=,r=<nonce>"
    std::optional<std::string> handle_server_first(std::string_view msg);  // -> client-final
    bool verify_server_final(std::string_view msg);
    const std::string& error() const { return error_; }
    void set_nonce_for_test(std::string nonce) { nonce_ = std::move(nonce); }
    // PostgreSQL ignores the SCRAM user name (libpq sends an empty one, the default here);
    // set it only to reproduce RFC test vectors. Call before client_first().
    void set_username(std::string user) { username_ = std::move(user); }

private:
    std::string password_, username_;
    Bytes client_key_, server_key_;
    bool have_keys_ = false;
    std::string nonce_, client_first_bare_, auth_message_;
    Bytes expected_server_signature_;
    std::string error_;
};

// ---- LDAP (auth_type = "ldap" with auth_ldap_options; hba "ldap" lines) ------
// PostgreSQL's options and modes: simple bind (DN = ldapprefix + user + ldapsuffix)
// or search+bind (search ldapbasedn for the user, bound as ldapbinddn or anonymously,
// then bind as the entry found).
struct LdapOptions {
    std::string scheme = "ldap";       // ldapscheme: ldap | ldaps
    std::vector<std::string> servers;  // ldapserver: blank-separated host names
    int port = 0;                      // ldapport; 0 = the scheme's own
    bool starttls = false;             // ldaptls = 1
    std::string prefix, suffix;        // simple bind
    std::string basedn, binddn, bindpasswd, search_attribute, search_filter;  // search+bind
    int scope = 2;                     // from ldapurl: 0 base, 1 one, 2 sub (the default)
    bool search_mode() const { return !basedn.empty(); }
    // "ldap://host1:port ldap://host2:port": the URI list libldap connects to.
    std::string uri() const;
};
using OptionList = std::vector<std::pair<std::string, std::string>>;
// The ldap* options of an hba line or of auth_ldap_options; nullopt + PostgreSQL's
// message when an option is unknown, malformed, or the set is inconsistent.
std::optional<LdapOptions> parse_ldap_options(const OptionList& options, std::string& error);
// auth_ldap_options: blank-separated name=value, a value may be "quoted" ("" = a quote).
std::optional<OptionList> split_options(std::string_view text, std::string& error);
// The search filter for `user`: ldapsearchfilter with each $username replaced, else
// (ldapsearchattribute=user) with uid as the attribute.
std::string ldap_filter_for(const LdapOptions& o, std::string_view user);
// PostgreSQL refuses, in search+bind mode, user names with * ( ) \ or / (they would
// change the filter).
bool ldap_user_name_allowed(std::string_view user);

// ---- pg_hba.conf -------------------------------------------------------------
enum class HbaConnType { local, host, hostssl, hostnossl };
enum class HbaMethod { trust, reject, md5, scram_sha_256, password, cert, peer, ldap };
struct HbaRule {
    int line = 0;
    HbaConnType type = HbaConnType::host;
    std::vector<std::string> databases;  // "all", "sameuser", names
    std::vector<std::string> users;      // "all", names ("+group" unsupported -> parse error)
    // Parallel to databases/users: true where the name was quoted, so "all" in quotes is a
    // database or user called all, not the keyword. Missing entries count as unquoted.
    std::vector<bool> database_quoted, user_quoted;
    // address: for host*: network + prefix length; empty for local
    std::array<std::uint8_t, 16> addr{};
    int prefix_len = 0;
    bool is_v6 = false;
    bool any_addr = false;  // "all"
    HbaMethod method = HbaMethod::reject;
    std::string map;  // map= option (peer, cert): an ident map of auth_ident_file; "" = none
    std::optional<LdapOptions> ldap;  // the ldap* options of an ldap line
};
struct HbaParseResult {
    std::vector<HbaRule> rules;
    std::vector<std::string> errors;  // "line N: reason"
};
HbaParseResult parse_hba(std::string_view text);
HbaParseResult load_hba(const std::string& path);
struct HbaRequest {
    bool unix_socket = false;
    bool tls = false;
    std::string database, user;
    std::string address;  // textual IPv4/IPv6 for TCP
};
// First matching rule's method; nullopt = no rule matched (reject).
std::optional<HbaMethod> hba_match(const std::vector<HbaRule>& rules, const HbaRequest& req);
// The first matching rule itself; null = none.
const HbaRule* hba_match_rule(const std::vector<HbaRule>& rules, const HbaRequest& req);

// ---- auth_ident_file (PgBouncer 1.23+): "map-name system-user database-user" lines ----
struct IdentMapping {
    std::string system_user;    // the OS user (peer) or a certificate name (cert), literally
    std::string database_user;  // a user name, or "all"
};
using IdentMaps = std::map<std::string, std::vector<IdentMapping>>;
struct IdentParseResult {
    IdentMaps maps;
    std::vector<std::string> errors;  // "line N: reason"
};
IdentParseResult parse_ident(std::string_view text);
IdentParseResult load_ident(const std::string& path);
// Map `name` lets `system_user` log in as `user`.
bool ident_allows(const IdentMaps& maps, const std::string& name, std::string_view system_user, std::string_view user);

}  // namespace pgrouter::auth
