// libFuzzer target: arbitrary bytes as a stream of frontend messages and as a
// stream of backend messages; each whole frame's body goes through the parsers.
#include "pgrouter/protocol/protocol.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

using namespace pgrouter::protocol;

void check(bool ok, const char* what) {
    if (ok) return;
    std::fprintf(stderr, "fuzz_frames: invariant broken: %s\n", what);
    std::abort();
}

std::string_view text(Bytes b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

void check_body(Bytes body) {
    if (auto s = read_cstring(body)) check(s->size() < body.size() && body[s->size()] == std::byte{0}, "cstring");
    if (auto e = parse_error_response(body)) {
        for (auto* f : {&e->severity, &e->sqlstate, &e->message, &e->detail, &e->hint})
            check(f->size() < body.size() && f->find('\0') == std::string::npos, "error field");
    }
    if (auto p = parse_parameter_status(body)) {
        std::string again;
        write_parameter_status(again, p->first, p->second);
        check(std::string_view(again).substr(5) == text(body), "ParameterStatus round trip");
    }
    if (auto s = parse_sasl_initial_response(body)) {
        check(s->mechanism.size() + 5 + s->data.size() == body.size(), "SASLInitialResponse fills the body");
        if (get_u32(body.data() + s->mechanism.size() + 1) != 0xFFFFFFFFu) {
            std::string again;
            write_sasl_initial_response(again, s->mechanism, s->data);
            check(std::string_view(again).substr(5) == text(body), "SASLInitialResponse round trip");
        }
    }
    if (auto a = parse_auth_request(body)) check(a->data.size() + 4 == body.size(), "auth data");
    if (auto k = parse_backend_key_data(body)) {
        std::string again;
        write_backend_key_data(again, k->first, k->second);
        check(std::string_view(again).substr(5) == text(body), "BackendKeyData round trip");
    }
}

void walk(Bytes buf, HeaderResult (*decode)(Bytes), bool frontend) {
    while (true) {
        auto h = decode(buf);
        if (h.status == Decode::need_more) {
            check(buf.size() < 5, "need_more only below 5 bytes");
            return;
        }
        auto again = decode(buf.first(5));
        check(again.status == h.status, "the header alone decides");
        if (h.status == Decode::error) {
            check(h.error != nullptr, "errors carry a message");
            return;
        }
        check(h.header.length >= 4 && h.header.length <= kMaxMessage, "length within limits");
        if (frontend) {
            auto max = frontend_max_length(h.header.type);
            check(max != 0 && h.header.length <= max && (max != 4 || h.header.length == 4), "per-type limit");
        }
        if (h.header.total() > buf.size()) return;
        check_body(buf.subspan(5, h.header.body_size()));
        buf = buf.subspan(h.header.total());
    }
}

// quote_* must round trip through the SQL lexer's unquoting rules.
void check_quoting(std::string_view s) {
    auto lit = quote_literal(s);
    bool e = !lit.empty() && lit[0] == 'E';
    std::string_view inner(lit);
    check(inner.size() >= 2 + e && inner[e] == '\'' && inner.back() == '\'', "literal is quoted");
    inner = inner.substr(1 + e, inner.size() - 2 - e);
    std::string back;
    for (std::size_t i = 0; i < inner.size(); ++i) {
        char c = inner[i];
        if (c == '\'' || (e && c == '\\')) {
            check(i + 1 < inner.size() && inner[i + 1] == c, "quote or backslash doubled");
            ++i;
        }
        back.push_back(c);
    }
    check(back == s, "literal round trip");

    auto id = quote_ident(s);
    check(id.size() >= 2 && id.front() == '"' && id.back() == '"', "identifier is quoted");
    back.clear();
    for (std::size_t i = 1; i + 1 < id.size(); ++i) {
        if (id[i] == '"') {
            check(id[i + 1] == '"', "double quote doubled");
            ++i;
        }
        back.push_back(id[i]);
    }
    check(back == s, "identifier round trip");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Bytes buf(reinterpret_cast<const std::byte*>(data), size);
    walk(buf, decode_frontend_header, true);
    walk(buf, decode_backend_header, false);
    check_body(buf);
    if (size <= 4096) check_quoting(text(buf));
    return 0;
}
