// LDAP options as PostgreSQL's pg_hba.conf takes them (PgBouncer 1.25 uses the same
// set): parsing and checking only; the LDAP conversation itself is in the session module.
#include "pgrouter/auth/auth.hpp"

#include <charconv>
#include <cstdlib>

namespace pgrouter::auth {

namespace {

std::string quoted(std::string_view s) { return "\"" + std::string(s) + "\""; }

bool blank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::vector<std::string> split_blank(std::string_view s) {
    std::vector<std::string> out;
    std::size_t i = 0;
    while (i < s.size()) {
        while (i < s.size() && (blank(s[i]) || s[i] == ',')) ++i;
        std::size_t start = i;
        while (i < s.size() && !blank(s[i]) && s[i] != ',') ++i;
        if (i > start) out.emplace_back(s.substr(start, i - start));
    }
    return out;
}

bool parse_port(std::string_view text, int& port) {
    int v = 0;
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || p != text.data() + text.size() || v < 1 || v > 65535) return false;
    port = v;
    return true;
}

// %XX escapes of an LDAP URL part.
std::optional<std::string> url_decode(std::string_view s) {
    std::string out;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != '%') {
            out += s[i];
            continue;
        }
        if (i + 2 >= s.size()) return std::nullopt;
        int v = 0;
        auto [p, ec] = std::from_chars(s.data() + i + 1, s.data() + i + 3, v, 16);
        if (ec != std::errc{} || p != s.data() + i + 3) return std::nullopt;
        out += static_cast<char>(v);
        i += 2;
    }
    return out;
}

// ldap[s]://host[:port][/basedn[?attribute[?scope[?filter]]]], as PostgreSQL's ldapurl
// (search+bind: the base DN is required, the attribute and filter optional).
bool parse_ldap_url(std::string_view url, LdapOptions& o, std::string& error) {
    auto bad = [&](std::string why) {
        error = "invalid LDAP URL " + quoted(url) + ": " + why;
        return false;
    };
    std::size_t colon = url.find("://");
    if (colon == std::string_view::npos) return bad("no scheme");
    std::string_view scheme = url.substr(0, colon);
    if (scheme != "ldap" && scheme != "ldaps") {
        error = "unsupported LDAP URL scheme: " + std::string(scheme);
        return false;
    }
    o.scheme = std::string(scheme);
    std::string_view rest = url.substr(colon + 3);
    std::size_t slash = rest.find('/');
    std::string_view hostport = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
    if (hostport.empty()) return bad("no host");
    if (auto c = hostport.rfind(':'); c != std::string_view::npos && hostport.find(']') == std::string_view::npos) {
        if (!parse_port(hostport.substr(c + 1), o.port)) return bad("invalid port");
        hostport = hostport.substr(0, c);
    }
    o.servers = {std::string(hostport)};
    std::vector<std::string_view> parts;
    std::size_t start = 0;
    while (true) {
        std::size_t q = path.find('?', start);
        parts.push_back(path.substr(start, q == std::string_view::npos ? std::string_view::npos : q - start));
        if (q == std::string_view::npos) break;
        start = q + 1;
    }
    if (parts.size() > 4) return bad("extensions are not supported");
    auto part = [&](std::size_t i) -> std::optional<std::string> {
        if (i >= parts.size()) return std::string();
        return url_decode(parts[i]);
    };
    auto base = part(0), attr = part(1), scope = part(2), filter = part(3);
    if (!base || !attr || !scope || !filter) return bad("invalid %-escape");
    o.basedn = *base;
    o.search_attribute = *attr;
    o.search_filter = *filter;
    if (scope->empty() || *scope == "sub") o.scope = 2;
    else if (*scope == "one") o.scope = 1;
    else if (*scope == "base") o.scope = 0;
    else return bad("invalid scope " + quoted(*scope));
    return true;
}

}  // namespace

std::string LdapOptions::uri() const {
    std::string out;
    for (auto& s : servers) {
        if (!out.empty()) out += ' ';
        out += scheme + "://" + s;
        if (port != 0) out += ":" + std::to_string(port);
    }
    return out;
}

std::optional<LdapOptions> parse_ldap_options(const OptionList& options, std::string& error) {
    LdapOptions o;
    bool any_simple = false, any_search = false, has_url = false;
    for (auto& [name, value] : options) {
        if (name == "ldapserver") {
            o.servers = split_blank(value);
        } else if (name == "ldapport") {
            if (!parse_port(value, o.port)) {
                error = "invalid LDAP port number: " + quoted(value);
                return std::nullopt;
            }
        } else if (name == "ldapscheme") {
            if (value != "ldap" && value != "ldaps") {
                error = "invalid ldapscheme value: " + quoted(value);
                return std::nullopt;
            }
            o.scheme = value;
        } else if (name == "ldaptls") {
            o.starttls = value == "1";
        } else if (name == "ldapprefix") {
            o.prefix = value;
            any_simple = true;
        } else if (name == "ldapsuffix") {
            o.suffix = value;
            any_simple = true;
        } else if (name == "ldapbasedn") {
            o.basedn = value;
            any_search = true;
        } else if (name == "ldapbinddn") {
            o.binddn = value;
            any_search = true;
        } else if (name == "ldapbindpasswd") {
            o.bindpasswd = value;
            any_search = true;
        } else if (name == "ldapsearchattribute") {
            o.search_attribute = value;
            any_search = true;
        } else if (name == "ldapsearchfilter") {
            o.search_filter = value;
            any_search = true;
        } else if (name == "ldapurl") {
            LdapOptions from_url;
            if (!parse_ldap_url(value, from_url, error)) return std::nullopt;
            o.scheme = from_url.scheme;
            o.servers = from_url.servers;
            if (from_url.port) o.port = from_url.port;
            o.basedn = from_url.basedn;
            if (!from_url.search_attribute.empty()) o.search_attribute = from_url.search_attribute;
            if (!from_url.search_filter.empty()) o.search_filter = from_url.search_filter;
            o.scope = from_url.scope;
            has_url = true;
            any_search = true;
        } else {
            error = "unrecognized LDAP option name: " + quoted(name);
            return std::nullopt;
        }
    }
    // PostgreSQL's checks, with its messages.
    if (any_simple && any_search) {
        error = "cannot mix options for simple bind and search+bind modes";
        return std::nullopt;
    }
    if (o.servers.empty()) {
        error = "authentication method \"ldap\" requires argument \"ldapserver\" to be set";
        return std::nullopt;
    }
    if (!any_simple && o.basedn.empty()) {
        error = has_url ? std::string("the LDAP URL must name a base DN")
                        : "authentication method \"ldap\" requires argument \"ldapbasedn\", \"ldapprefix\", or "
                          "\"ldapsuffix\" to be set";
        return std::nullopt;
    }
    if (!o.search_attribute.empty() && !o.search_filter.empty()) {
        error = "cannot use ldapsearchattribute together with ldapsearchfilter";
        return std::nullopt;
    }
    if (o.starttls && o.scheme == "ldaps") {
        error = "ldaptls cannot be used with ldapscheme \"ldaps\"";
        return std::nullopt;
    }
    return o;
}

std::optional<OptionList> split_options(std::string_view text, std::string& error) {
    OptionList out;
    std::size_t i = 0;
    while (true) {
        while (i < text.size() && blank(text[i])) ++i;
        if (i == text.size()) break;
        std::size_t eq = text.find('=', i);
        std::size_t end_name = i;
        while (end_name < text.size() && !blank(text[end_name]) && text[end_name] != '=') ++end_name;
        if (eq == std::string_view::npos || eq != end_name || eq == i) {
            error = "expected name=value, got " + quoted(text.substr(i, end_name - i));
            return std::nullopt;
        }
        std::string name(text.substr(i, eq - i)), value;
        i = eq + 1;
        bool in_quote = false;
        while (i < text.size() && (in_quote || !blank(text[i]))) {
            char c = text[i++];
            if (c == '"') {
                if (in_quote && i < text.size() && text[i] == '"') {
                    value += '"';
                    ++i;
                } else {
                    in_quote = !in_quote;
                }
                continue;
            }
            value += c;
        }
        if (in_quote) {
            error = "unterminated quoted string in the value of " + name;
            return std::nullopt;
        }
        out.emplace_back(std::move(name), std::move(value));
    }
    return out;
}

std::string ldap_filter_for(const LdapOptions& o, std::string_view user) {
    if (o.search_filter.empty())
        return "(" + (o.search_attribute.empty() ? std::string("uid") : o.search_attribute) + "=" + std::string(user) +
               ")";
    std::string out;
    std::string_view f = o.search_filter;
    constexpr std::string_view token = "$username";
    for (std::size_t i = 0; i < f.size();) {
        if (f.compare(i, token.size(), token) == 0) {
            out += user;
            i += token.size();
        } else {
            out += f[i++];
        }
    }
    return out;
}

bool ldap_user_name_allowed(std::string_view user) {
    return !user.empty() && user.find_first_of("*()\\/") == std::string_view::npos;
}

}  // namespace pgrouter::auth
