// pg_hba.conf: the subset of PostgreSQL's syntax a pooler can honour, and first-match lookup.
#include "pgrouter/auth/auth.hpp"

#include <arpa/inet.h>

#include <algorithm>
#include <cerrno>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <system_error>

namespace pgrouter::auth {

namespace {

struct Token {
    std::string text;
    bool quoted = false;  // began with a double quote: never a keyword
};
using Field = std::vector<Token>;  // comma-separated list

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

bool is_keyword(const Token& t, std::string_view k) { return !t.quoted && t.text == k; }

// Lexes like PostgreSQL's next_token(): blanks and commas before a token are skipped, a
// comma right after a token continues the list, '#' outside quotes starts a comment, and
// "" inside quotes is a literal quote. Returns false at end of line.
bool next_token(std::string_view line, std::size_t& pos, Token& tok, bool& trailing_comma, std::string& err) {
    while (pos < line.size() && (is_blank(line[pos]) || line[pos] == ',')) ++pos;
    tok = Token{};
    trailing_comma = false;
    if (pos == line.size() || line[pos] == '#') {
        pos = line.size();
        return false;
    }
    tok.quoted = line[pos] == '"';
    bool in_quote = false;
    while (pos < line.size()) {
        char c = line[pos];
        if (!in_quote && (is_blank(c) || c == '#')) break;
        ++pos;
        if (!in_quote && c == ',') {
            trailing_comma = true;
            break;
        }
        if (c == '"') {
            if (in_quote && pos < line.size() && line[pos] == '"') {
                tok.text += '"';
                ++pos;
            } else {
                in_quote = !in_quote;
            }
            continue;
        }
        tok.text += c;
    }
    if (in_quote) err = "unterminated quoted string";
    return true;
}

bool tokenize(std::string_view line, std::vector<Field>& fields, std::string& err) {
    std::size_t pos = 0;
    Token tok;
    bool more = false;
    while (next_token(line, pos, tok, more, err)) {
        Field field{std::move(tok)};
        while (more && err.empty() && next_token(line, pos, tok, more, err)) field.push_back(std::move(tok));
        if (!err.empty()) return false;
        fields.push_back(std::move(field));
    }
    return true;
}

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

// The one token of a field that cannot be a list.
const Token* single(const Field& f, std::string_view what, std::string& err) {
    if (f.size() != 1) {
        err = "multiple values specified for " + std::string(what);
        return nullptr;
    }
    return &f[0];
}

bool parse_conn_type(const Field& f, HbaRule& rule, std::string& err) {
    const Token* t = single(f, "connection type", err);
    if (!t) return false;
    if (is_keyword(*t, "local")) rule.type = HbaConnType::local;
    else if (is_keyword(*t, "host")) rule.type = HbaConnType::host;
    else if (is_keyword(*t, "hostssl")) rule.type = HbaConnType::hostssl;
    else if (is_keyword(*t, "hostnossl")) rule.type = HbaConnType::hostnossl;
    else if (is_keyword(*t, "hostgssenc") || is_keyword(*t, "hostnogssenc"))
        err = "unsupported connection type " + quoted(t->text);
    else if (t->text.starts_with("include"))
        err = "include directives are not supported";
    else
        err = "invalid connection type " + quoted(t->text);
    return err.empty();
}

bool parse_names(const Field& f, bool is_user, HbaRule& rule, std::string& err) {
    auto& names = is_user ? rule.users : rule.databases;
    auto& quoted_flags = is_user ? rule.user_quoted : rule.database_quoted;
    for (const Token& t : f) {
        if (!t.quoted && t.text.starts_with("@")) {
            err = "file inclusion (" + t.text + ") is not supported";
        } else if (is_user && !t.quoted && t.text.starts_with("+")) {
            err = "group membership (" + t.text + ") is not supported";
        } else if (!is_user && (is_keyword(t, "samerole") || is_keyword(t, "samegroup"))) {
            err = quoted(t.text) + " is not supported";
        }
        if (!err.empty()) return false;
        names.push_back(t.text);
        quoted_flags.push_back(t.quoted);
    }
    return true;
}

// Parses a textual IPv4/IPv6 address into 16 bytes (IPv4 in the first 4).
bool parse_ip(const std::string& s, std::array<std::uint8_t, 16>& out, bool& is_v6) {
    out = {};
    if (inet_pton(AF_INET, s.c_str(), out.data()) == 1) {
        is_v6 = false;
        return true;
    }
    if (inet_pton(AF_INET6, s.c_str(), out.data()) == 1) {
        is_v6 = true;
        return true;
    }
    return false;
}

// A netmask column to a prefix length; only contiguous masks are meaningful as prefixes.
std::optional<int> mask_to_prefix(const std::array<std::uint8_t, 16>& mask, bool is_v6) {
    int bytes = is_v6 ? 16 : 4, prefix = 0;
    bool ended = false;
    for (int i = 0; i < bytes; ++i) {
        for (int bit = 7; bit >= 0; --bit) {
            bool set = (mask[static_cast<std::size_t>(i)] >> bit) & 1;
            if (set && ended) return std::nullopt;
            if (set) ++prefix;
            else ended = true;
        }
    }
    return prefix;
}

// ADDRESS, or ADDRESS NETMASK (consumes two fields then). `idx` points at the address field.
bool parse_address(const std::vector<Field>& fields, std::size_t& idx, HbaRule& rule, std::string& err) {
    if (idx >= fields.size()) {
        err = "missing address";
        return false;
    }
    const Token* t = single(fields[idx++], "address", err);
    if (!t) return false;
    if (is_keyword(*t, "all")) {
        rule.any_addr = true;
        return true;
    }
    if (is_keyword(*t, "samehost") || is_keyword(*t, "samenet")) {
        err = quoted(t->text) + " is not supported";
        return false;
    }
    std::size_t slash = t->text.find('/');
    if (slash != std::string::npos) {
        std::string addr = t->text.substr(0, slash), len = t->text.substr(slash + 1);
        if (!parse_ip(addr, rule.addr, rule.is_v6)) {
            err = "invalid IP address " + quoted(addr);
            return false;
        }
        int prefix = -1;
        auto [p, ec] = std::from_chars(len.data(), len.data() + len.size(), prefix);
        if (ec != std::errc{} || p != len.data() + len.size() || prefix < 0 || prefix > (rule.is_v6 ? 128 : 32)) {
            err = "invalid CIDR mask in address " + quoted(t->text);
            return false;
        }
        rule.prefix_len = prefix;
        return true;
    }
    if (!parse_ip(t->text, rule.addr, rule.is_v6)) {
        err = "invalid IP address " + quoted(t->text) + " (host names are not supported)";
        return false;
    }
    if (idx >= fields.size()) {
        err = "missing netmask after IP address " + quoted(t->text);
        return false;
    }
    const Token* m = single(fields[idx++], "netmask", err);
    if (!m) return false;
    std::array<std::uint8_t, 16> mask{};
    bool mask_v6 = false;
    if (!parse_ip(m->text, mask, mask_v6)) {
        err = "invalid IP mask " + quoted(m->text);
        return false;
    }
    if (mask_v6 != rule.is_v6) {
        err = "IP address and mask do not match";
        return false;
    }
    auto prefix = mask_to_prefix(mask, mask_v6);
    if (!prefix) {
        err = "non-contiguous IP mask " + quoted(m->text) + " is not supported";
        return false;
    }
    rule.prefix_len = *prefix;
    return true;
}

bool parse_method(const Field& f, HbaRule& rule, std::string& err) {
    const Token* t = single(f, "authentication method", err);
    if (!t) return false;
    const std::string& m = t->text;
    if (m == "trust") rule.method = HbaMethod::trust;
    else if (m == "reject") rule.method = HbaMethod::reject;
    else if (m == "md5") rule.method = HbaMethod::md5;
    else if (m == "scram-sha-256") rule.method = HbaMethod::scram_sha_256;
    else if (m == "password") rule.method = HbaMethod::password;
    else if (m == "cert") rule.method = HbaMethod::cert;
    else if (m == "peer") rule.method = HbaMethod::peer;
    else if (m == "ldap") rule.method = HbaMethod::ldap;
    else err = "unsupported method " + quoted(m);
    if (err.empty() && rule.method == HbaMethod::cert && rule.type != HbaConnType::hostssl)
        err = "cert authentication is only supported on hostssl connections";
    if (err.empty() && rule.method == HbaMethod::peer && rule.type != HbaConnType::local)
        err = "peer authentication is only supported on local sockets";
    return err.empty();
}

// One logical line (continuations joined) to a rule; empty lines leave `rule` unset.
std::string parse_record(std::string_view line, int line_no, std::optional<HbaRule>& out) {
    std::vector<Field> fields;
    std::string err;
    if (!tokenize(line, fields, err)) return err;
    if (fields.empty()) return {};
    HbaRule rule;
    rule.line = line_no;
    if (!parse_conn_type(fields[0], rule, err)) return err;
    if (fields.size() < 2) return "missing database";
    if (!parse_names(fields[1], false, rule, err)) return err;
    if (fields.size() < 3) return "missing user";
    if (!parse_names(fields[2], true, rule, err)) return err;
    std::size_t idx = 3;
    if (rule.type != HbaConnType::local && !parse_address(fields, idx, rule, err)) return err;
    if (idx >= fields.size()) return "missing authentication method";
    if (!parse_method(fields[idx++], rule, err)) return err;
    // Options: map= names an ident map (peer, cert); ldap* configure an ldap line;
    // others (clientcert=...) do not change the method: accepted, ignored.
    OptionList ldap_options;
    for (; idx < fields.size(); ++idx) {
        std::string opt = fields[idx][0].text;
        for (std::size_t k = 1; k < fields[idx].size(); ++k) opt += "," + fields[idx][k].text;
        std::size_t eq = opt.find('=');
        if (eq == std::string::npos || eq == 0) return "invalid authentication option " + quoted(opt);
        std::string name = opt.substr(0, eq);
        if (name == "map") {
            if (eq + 1 == opt.size()) return "empty map name";
            rule.map = opt.substr(eq + 1);
        } else if (name.starts_with("ldap")) {
            if (rule.method != HbaMethod::ldap)
                return "authentication option " + quoted(name) + " is only valid for authentication method ldap";
            ldap_options.emplace_back(std::move(name), opt.substr(eq + 1));
        }
    }
    if (rule.method == HbaMethod::ldap) {
        rule.ldap = parse_ldap_options(ldap_options, err);
        if (!rule.ldap) return err;
    }
    out = std::move(rule);
    return {};
}

bool prefix_matches(const std::array<std::uint8_t, 16>& a, const std::array<std::uint8_t, 16>& b, int bits) {
    std::size_t full = static_cast<std::size_t>(bits / 8);
    for (std::size_t i = 0; i < full; ++i)
        if (a[i] != b[i]) return false;
    if (int rest = bits % 8; rest != 0) {
        auto mask = static_cast<std::uint8_t>(0xFF << (8 - rest));
        if ((a[full] & mask) != (b[full] & mask)) return false;
    }
    return true;
}

bool quoted_at(const std::vector<bool>& flags, std::size_t i) { return i < flags.size() && flags[i]; }

bool database_matches(const HbaRule& rule, const HbaRequest& req) {
    for (std::size_t i = 0; i < rule.databases.size(); ++i) {
        const std::string& name = rule.databases[i];
        if (!quoted_at(rule.database_quoted, i)) {
            if (name == "all") return true;
            if (name == "sameuser") {
                if (req.database == req.user) return true;
                continue;
            }
            if (name == "replication") continue;  // physical replication never goes through the pooler
        }
        if (name == req.database) return true;
    }
    return false;
}

bool user_matches(const HbaRule& rule, const HbaRequest& req) {
    for (std::size_t i = 0; i < rule.users.size(); ++i) {
        if (!quoted_at(rule.user_quoted, i) && rule.users[i] == "all") return true;
        if (rule.users[i] == req.user) return true;
    }
    return false;
}

bool address_matches(const HbaRule& rule, const HbaRequest& req) {
    if (rule.any_addr) return true;
    std::array<std::uint8_t, 16> addr{};
    bool is_v6 = false;
    if (!parse_ip(req.address, addr, is_v6)) return false;
    // ::ffff:a.b.c.d is an IPv4 client on a dual-stack socket.
    static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (is_v6 && std::equal(kMapped, kMapped + 12, addr.begin())) {
        std::array<std::uint8_t, 16> v4{};
        std::copy(addr.begin() + 12, addr.end(), v4.begin());
        addr = v4;
        is_v6 = false;
    }
    return is_v6 == rule.is_v6 && prefix_matches(addr, rule.addr, rule.prefix_len);
}

bool conn_type_matches(HbaConnType type, const HbaRequest& req) {
    switch (type) {
    case HbaConnType::local: return req.unix_socket;
    case HbaConnType::host: return !req.unix_socket;
    case HbaConnType::hostssl: return !req.unix_socket && req.tls;
    case HbaConnType::hostnossl: return !req.unix_socket && !req.tls;
    }
    return false;
}

}  // namespace

HbaParseResult parse_hba(std::string_view text) {
    HbaParseResult result;
    int line_no = 0;
    while (!text.empty()) {
        int first_line = line_no + 1;
        std::string logical;
        // A backslash at the end of a line joins the next one, as PostgreSQL does (no separator).
        for (;;) {
            ++line_no;
            std::size_t nl = text.find('\n');
            std::string_view line = text.substr(0, nl);
            text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
            if (line.empty() || line.back() != '\\') {
                logical.append(line);
                break;
            }
            logical.append(line.substr(0, line.size() - 1));
            if (text.empty()) break;
        }
        std::optional<HbaRule> rule;
        if (std::string err = parse_record(logical, first_line, rule); !err.empty())
            result.errors.push_back("line " + std::to_string(first_line) + ": " + err);
        else if (rule)
            result.rules.push_back(std::move(*rule));
    }
    return result;
}

namespace {
// The whole file, or nullopt with `err` set ("cannot read PATH: reason").
std::optional<std::string> read_text_file(const std::string& path, std::string& err) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        err = "cannot read " + path + ": " + std::generic_category().message(errno);
        return std::nullopt;
    }
    std::string text;
    char buf[8192];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    bool failed = std::ferror(f) != 0;
    int code = errno;
    std::fclose(f);
    if (failed) {
        err = "cannot read " + path + ": " + std::generic_category().message(code);
        return std::nullopt;
    }
    return text;
}
}  // namespace

HbaParseResult load_hba(const std::string& path) {
    std::string err;
    auto text = read_text_file(path, err);
    if (!text) {
        HbaParseResult r;
        r.errors.push_back(err);
        return r;
    }
    return parse_hba(*text);
}

const HbaRule* hba_match_rule(const std::vector<HbaRule>& rules, const HbaRequest& req) {
    for (const HbaRule& rule : rules) {
        if (!conn_type_matches(rule.type, req)) continue;
        if (rule.type != HbaConnType::local && !address_matches(rule, req)) continue;
        if (!database_matches(rule, req) || !user_matches(rule, req)) continue;
        return &rule;
    }
    return nullptr;
}

std::optional<HbaMethod> hba_match(const std::vector<HbaRule>& rules, const HbaRequest& req) {
    const HbaRule* rule = hba_match_rule(rules, req);
    if (!rule) return std::nullopt;
    return rule->method;
}

IdentParseResult parse_ident(std::string_view text) {
    IdentParseResult r;
    int line_no = 0;
    while (!text.empty()) {
        ++line_no;
        auto nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
        if (auto hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
        std::vector<std::string> words;
        std::size_t i = 0;
        while (i < line.size()) {
            while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
            std::size_t b = i;
            while (i < line.size() && !std::isspace(static_cast<unsigned char>(line[i]))) ++i;
            if (i > b) words.emplace_back(line.substr(b, i - b));
        }
        if (words.empty()) continue;
        auto bad = [&](const std::string& why) { r.errors.push_back("line " + std::to_string(line_no) + ": " + why); };
        if (words.size() != 3) {
            bad("expected \"map-name system-username database-username\", got " + std::to_string(words.size()) +
                " field(s)");
            continue;
        }
        if (words[1].front() == '/') {
            bad("regular expressions (\"" + words[1] + "\") are not supported");
            continue;
        }
        if (words[2].front() == '+') {
            bad("group names (\"" + words[2] + "\") are not supported");
            continue;
        }
        r.maps[words[0]].push_back(IdentMapping{words[1], words[2]});
    }
    return r;
}

IdentParseResult load_ident(const std::string& path) {
    std::string err;
    auto text = read_text_file(path, err);
    if (!text) {
        IdentParseResult r;
        r.errors.push_back(err);
        return r;
    }
    return parse_ident(*text);
}

bool ident_allows(const IdentMaps& maps, const std::string& name, std::string_view system_user, std::string_view user) {
    auto it = maps.find(name);
    if (it == maps.end()) return false;
    for (const auto& m : it->second)
        if (m.system_user == system_user && (m.database_user == "all" || m.database_user == user)) return true;
    return false;
}

}  // namespace pgrouter::auth
