// auth_file in PgBouncer's userlist.txt format.
#include "pgrouter/auth/auth.hpp"

#include <cerrno>
#include <cstdio>
#include <system_error>

namespace pgrouter::auth {

namespace {

bool is_lower_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; }

// Reads a double-quoted field at text[pos] ("" is an escaped quote). Advances pos past the
// closing quote. Returns nullopt if the quote is not closed on this line.
std::optional<std::string> read_quoted(std::string_view line, std::size_t& pos) {
    std::string out;
    ++pos;  // opening quote
    while (pos < line.size()) {
        char c = line[pos++];
        if (c != '"') {
            out += c;
            continue;
        }
        if (pos < line.size() && line[pos] == '"') {
            out += '"';
            ++pos;
            continue;
        }
        return out;
    }
    return std::nullopt;
}

void skip_blanks(std::string_view line, std::size_t& pos) {
    while (pos < line.size() && is_blank(line[pos])) ++pos;
}

// Parses one line; returns an error reason or empty on success. `cred` is set only when a
// user was read (blank and comment lines leave it empty).
std::string parse_line(std::string_view line, std::optional<Credential>& cred) {
    std::size_t pos = 0;
    skip_blanks(line, pos);
    if (pos == line.size() || line[pos] == ';' || line[pos] == '#') return {};
    if (line[pos] != '"') return "expected a quoted user name";
    auto user = read_quoted(line, pos);
    if (!user) return "unterminated quoted user name";
    if (user->empty()) return "empty user name";
    if (pos < line.size() && !is_blank(line[pos])) return "expected whitespace after the user name";
    skip_blanks(line, pos);
    if (pos == line.size()) return "missing secret";
    if (line[pos] != '"') return "expected a quoted secret";
    auto secret = read_quoted(line, pos);
    if (!secret) return "unterminated quoted secret";
    // Whatever follows the secret is ignored, as PgBouncer does.
    SecretKind kind = classify_secret(*secret);
    if (kind == SecretKind::scram && !parse_scram_secret(*secret)) return "invalid SCRAM secret";
    cred = Credential{std::move(*user), std::move(*secret), kind};
    return {};
}

}  // namespace

SecretKind classify_secret(std::string_view secret) {
    if (secret.size() == 35 && secret.starts_with("md5")) {
        bool hex = true;
        for (char c : secret.substr(3)) hex = hex && is_lower_hex(c);
        if (hex) return SecretKind::md5;
    }
    if (secret.starts_with("SCRAM-SHA-256$")) return SecretKind::scram;
    return SecretKind::plain;
}

UserListResult parse_userlist(std::string_view text) {
    UserListResult result;
    int line_no = 0;
    while (!text.empty() || line_no == 0) {
        ++line_no;
        std::size_t nl = text.find('\n');
        std::string_view line = text.substr(0, nl);
        text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        std::optional<Credential> cred;
        if (std::string err = parse_line(line, cred); !err.empty()) {
            result.errors.push_back("line " + std::to_string(line_no) + ": " + err);
        } else if (cred) {
            std::string key = cred->user;
            result.users.insert_or_assign(std::move(key), std::move(*cred));  // last one wins
        }
    }
    return result;
}

UserListResult load_userlist(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) {
        UserListResult r;
        r.errors.push_back("cannot read " + path + ": " + std::generic_category().message(errno));
        return r;
    }
    std::string text;
    char buf[8192];
    std::size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
    bool failed = std::ferror(f) != 0;
    int err = errno;
    std::fclose(f);
    if (failed) {
        UserListResult r;
        r.errors.push_back("cannot read " + path + ": " + std::generic_category().message(err));
        return r;
    }
    return parse_userlist(text);
}

}  // namespace pgrouter::auth
