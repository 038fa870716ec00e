// Admin command parsing and the reply builders.
#include "pgrouter/admin/command.hpp"

#include "pgrouter/protocol/protocol.hpp"
#include "pgrouter/session/errors.hpp"

#include <cctype>
#include <ctime>

namespace pgrouter::admin {

namespace {
bool word_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.' || c == '$' ||
           c == '*' || c == ':' || c == '/' || static_cast<unsigned char>(c) >= 0x80;
}
bool space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

// A quoted token starting at s[i] (the quote); doubled quotes stand for one.
std::optional<std::string> quoted(std::string_view s, std::size_t& i) {
    char q = s[i++];
    std::string out;
    while (i < s.size()) {
        if (s[i] == q) {
            if (i + 1 < s.size() && s[i + 1] == q) {
                out += q;
                i += 2;
                continue;
            }
            ++i;
            return out;
        }
        out += s[i++];
    }
    return std::nullopt;
}
}  // namespace

std::string Command::keyword(std::size_t i) const {
    if (i >= tokens.size() || tokens[i].kind != Token::Kind::word) return {};
    std::string k = tokens[i].text;
    for (char& c : k) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return k;
}

std::optional<std::string> Command::name(std::size_t i) const {
    if (i >= tokens.size() || tokens[i].kind == Token::Kind::equals) return std::nullopt;
    return tokens[i].text;
}

ParseResult parse_command(std::string_view sql) {
    ParseResult r;
    Command cmd;
    std::size_t i = 0, end = sql.size();
    while (end > 0 && space(sql[end - 1])) --end;
    if (end > 0 && sql[end - 1] == ';') --end;
    while (end > 0 && space(sql[end - 1])) --end;
    while (i < end && space(sql[i])) ++i;
    cmd.text = std::string(sql.substr(i, end - i));
    while (i < end) {
        char c = sql[i];
        if (space(c)) {
            ++i;
        } else if (c == '=') {
            cmd.tokens.push_back({Token::Kind::equals, "="});
            ++i;
        } else if (c == '\'' || c == '"') {
            auto text = quoted(sql.substr(0, end), i);
            if (!text) {
                r.error = std::string("unterminated quoted ") + (c == '\'' ? "string" : "identifier");
                return r;
            }
            cmd.tokens.push_back({c == '\'' ? Token::Kind::string : Token::Kind::quoted_ident, std::move(*text)});
        } else if (word_char(c)) {
            std::size_t start = i;
            while (i < end && word_char(sql[i])) ++i;
            cmd.tokens.push_back({Token::Kind::word, std::string(sql.substr(start, i - start))});
        } else {
            r.error = "syntax error at or near \"" + std::string(1, c) + "\"";
            if (c == ';') r.error = "only one command per query is supported";
            return r;
        }
    }
    if (!cmd.tokens.empty()) r.command = std::move(cmd);
    return r;
}

void ResultSet::add(std::vector<Cell> row) {
    row.resize(cols_.size());
    rows_.push_back(std::move(row));
}

void ResultSet::write(std::string& out, std::string_view tag) const {
    std::vector<protocol::Column> desc;
    desc.reserve(cols_.size());
    for (auto& c : cols_) {
        protocol::Column d;
        d.name = c.name;
        switch (c.type) {
            case ColType::text: d.type_oid = 25, d.type_len = -1; break;
            case ColType::int4: d.type_oid = 23, d.type_len = 4; break;
            case ColType::int8: d.type_oid = 20, d.type_len = 8; break;
            case ColType::numeric: d.type_oid = 1700, d.type_len = -1; break;
            case ColType::bytea: d.type_oid = 17, d.type_len = -1; break;
        }
        desc.push_back(std::move(d));
    }
    protocol::write_row_description(out, desc);
    for (auto& r : rows_) protocol::write_data_row(out, r);
    protocol::write_command_complete(out, tag);
}

std::string format_time(std::chrono::system_clock::time_point t) {
    std::time_t secs = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
    return buf;
}

void Context::error(std::string_view sqlstate, std::string_view message) {
    session::write_pooler_error(out, sqlstate, message, false);
}

void Context::notice(std::string_view message, std::string_view detail) {
    // NoticeResponse with a DETAIL field: protocol::write_notice_response has none.
    std::string body;
    auto field = [&](char code, std::string_view v) {
        body += code;
        body.append(v);
        body += '\0';
    };
    field('S', "NOTICE");
    field('V', "NOTICE");
    field('C', "00000");
    field('M', message);
    if (!detail.empty()) field('D', detail);
    body += '\0';
    out += 'N';
    protocol::put_u32(out, static_cast<std::uint32_t>(body.size() + 4));
    out += body;
}

void Context::complete(std::string_view tag) { protocol::write_command_complete(out, tag); }

}  // namespace pgrouter::admin
