#include "pgrouter/protocol/scanner.hpp"

#include "pgrouter/protocol/prepared.hpp"

#include <algorithm>
#include <cstring>

namespace pgrouter::protocol {

bool FrontendScanner::note_type(char t, Result& r) {
    if (!last_type_) last_type_ = t;
    switch (t) {
        case 'Q': case 'F':
            ++r.sync_points;
            return true;
        case 'S':
            ++r.sync_points;
            unsynced_ = false;
            return true;
        case 'P': case 'B': case 'D': case 'E': case 'C': case 'H':
            unsynced_ = true;
            return true;
        case 'd': case 'c': case 'f':
            return true;
        default:  // 'p' after login
            r.error = "unexpected message type";
            r.bad_type = t;
            return false;
    }
}

FrontendScanner::Result FrontendScanner::scan_capture(const char* data, std::size_t n) {
    Result r;
    last_type_ = 0;
    std::size_t i = 0, raw_start = 0;
    auto flush_raw = [&](std::size_t end) {
        if (end > raw_start) {
            if (!r.items.empty() && r.items.back().message < 0 && r.items.back().end == raw_start)
                r.items.back().end = end;  // adjacent ranges: one piece
            else
                r.items.push_back({raw_start, end, -1});
        }
        raw_start = end;
    };
    while (i < n) {
        if (remaining_ > 0) {
            std::size_t take = std::min(remaining_, n - i);
            if (capturing_) captured_.append(data + i, take);
            remaining_ -= take;
            i += take;
            if (capturing_) raw_start = i;
            if (remaining_ == 0 && capturing_) {
                r.messages.push_back(std::move(captured_));
                captured_.clear();
                r.items.push_back({0, 0, static_cast<int>(r.messages.size() - 1), r.sync_points});
                capturing_ = false;
            }
            continue;
        }
        bool split = hdr_len_ > 0;  // header began in an earlier chunk (held back there)
        if (!split) flush_raw(i);
        std::size_t take = std::min(static_cast<std::size_t>(5 - hdr_len_), n - i);
        std::memcpy(hdr_ + hdr_len_, data + i, take);
        hdr_len_ += static_cast<int>(take);
        i += take;
        if (hdr_len_ < 5) {  // hold the partial header back until it is whole
            raw_start = i;
            break;
        }
        hdr_len_ = 0;
        auto h = decode_frontend_header(Bytes(reinterpret_cast<const std::byte*>(hdr_), 5));
        apply_policy(h);
        if (h.status == Decode::error) {
            r.error = h.error;
            r.bad_type = hdr_[0];
            return r;
        }
        char t = h.header.type;
        if (t == 'X') {
            r.terminate = true;
            return r;
        }
        if (!note_type(t, r)) return r;
        remaining_ = h.header.body_size();
        capturing_ = t == 'P' || t == 'B' || t == 'D' || t == 'C';
        if (capturing_ && !split && remaining_ <= n - i) {
            // Whole in this chunk: unnamed statements and portals need no rewriting,
            // so they are forwarded in place rather than copied.
            auto ref = statement_of(std::string_view(data + i - 5, 5 + remaining_));
            if (ref && (!ref->is_statement || ref->name.empty())) capturing_ = false;
        }
        if (capturing_) {
            captured_.assign(hdr_, 5);
            raw_start = i;
            if (remaining_ == 0) {
                r.messages.push_back(std::move(captured_));
                captured_.clear();
                r.items.push_back({0, 0, static_cast<int>(r.messages.size() - 1), r.sync_points});
                capturing_ = false;
            }
        } else if (split) {
            // The header's bytes came in pieces: send them from our copy.
            r.messages.emplace_back(hdr_, 5);
            r.items.push_back({0, 0, static_cast<int>(r.messages.size() - 1)});
            raw_start = i;
        } else {
            raw_start = i - 5;
        }
    }
    if (!capturing_ && hdr_len_ == 0) flush_raw(n);
    r.forward = n;
    return r;
}

void FrontendScanner::apply_policy(HeaderResult& h) const {
    if (h.status != Decode::ok) return;
    if (h.header.total() > max_total_) {
        h.status = Decode::error;
        h.error = kTooLarge;
    } else if (refuse_query_ && h.header.type == 'Q') {
        h.status = Decode::error;
        h.error = kQueryRefused;
    }
}

FrontendScanner::Result FrontendScanner::scan(const char* data, std::size_t n) {
    if (capture_) return scan_capture(data, n);
    Result r;
    std::size_t i = 0;
    last_type_ = 0;
    while (i < n) {
        if (remaining_ > 0) {
            std::size_t take = std::min(remaining_, n - i);
            remaining_ -= take;
            i += take;
            continue;
        }
        // Assemble a 5-byte header, possibly across reads.
        std::size_t start = hdr_len_ == 0 ? i : 0;  // where this message starts in the chunk
        std::size_t need = 5 - static_cast<std::size_t>(hdr_len_);
        std::size_t take = std::min(need, n - i);
        std::memcpy(hdr_ + hdr_len_, data + i, take);
        hdr_len_ += static_cast<int>(take);
        if (hdr_len_ < 5) {
            i += take;
            break;
        }
        auto h = decode_frontend_header(Bytes(reinterpret_cast<const std::byte*>(hdr_), 5));
        hdr_len_ = 0;
        apply_policy(h);
        if (h.status == Decode::error) {
            r.error = h.error;
            r.bad_type = hdr_[0];
            r.forward = start;  // everything before the bad header
            return r;
        }
        char t = h.header.type;
        if (!last_type_) last_type_ = t;
        if (t == 'X') {
            r.terminate = true;
            r.forward = start;
            return r;
        }
        switch (t) {
            case 'Q': case 'F':
                ++r.sync_points;
                break;
            case 'S':
                ++r.sync_points;
                unsynced_ = false;
                break;
            case 'P': case 'B': case 'D': case 'E': case 'C': case 'H':
                unsynced_ = true;
                break;
            case 'd': case 'c': case 'f':
                break;
            default:  // 'p' after login
                r.error = "unexpected message type";
                r.bad_type = t;
                r.forward = start;
                return r;
        }
        i += take;
        remaining_ = h.header.body_size();
    }
    r.forward = n;
    return r;
}

BackendScanner::Result BackendScanner::scan(const char* data, std::size_t n) {
    Result r;
    // A message begun in an earlier chunk starts before this one.
    msg_begin_ -= static_cast<long>(last_n_);
    last_n_ = n;
    std::size_t i = 0;
    while (i < n) {
        if (remaining_ > 0) {
            std::size_t take = std::min(remaining_, n - i);
            if (collect_) body_.append(data + i, take);
            remaining_ -= take;
            i += take;
            if (remaining_ == 0) on_body_complete(r, static_cast<long>(i));
            continue;
        }
        if (hdr_len_ == 0) msg_begin_ = static_cast<long>(i);
        std::size_t need = 5 - static_cast<std::size_t>(hdr_len_);
        std::size_t take = std::min(need, n - i);
        std::memcpy(hdr_ + hdr_len_, data + i, take);
        hdr_len_ += static_cast<int>(take);
        i += take;
        if (hdr_len_ < 5) break;
        hdr_len_ = 0;
        auto h = decode_backend_header(Bytes(reinterpret_cast<const std::byte*>(hdr_), 5));
        if (h.status == Decode::error || h.header.total() > max_total_) {
            r.error = true;
            r.too_large = h.status == Decode::ok;
            return r;
        }
        type_ = h.header.type;
        remaining_ = h.header.body_size();
        // CommandComplete: only a tag the length of "DISCARD ALL" or "DEALLOCATE ALL" (NUL included).
        collect_ = type_ == 'Z' || type_ == 'S' || (watch_ && type_ == 'C' && (remaining_ == 12 || remaining_ == 15));
        body_.clear();
        if (type_ == 'G' || type_ == 'W') r.copy_in = true;
        if (remaining_ == 0) on_body_complete(r, static_cast<long>(i));
    }
    return r;
}

void BackendScanner::on_body_complete(Result& r, long end) {
    if (watch_ && (type_ == '1' || type_ == '3' || type_ == 'Z')) r.events.push_back({type_, msg_begin_, end});
    if (watch_ && type_ == 'C' && collect_) {
        std::string_view tag(body_);
        if (!tag.empty() && tag.back() == '\0') tag.remove_suffix(1);
        if (tag == "DISCARD ALL" || tag == "DEALLOCATE ALL") r.events.push_back({'X', msg_begin_, end});
    }
    if (type_ == 'Z') {
        ++r.ready_for_query;
        r.txn_status = body_.empty() ? 'I' : body_[0];
    } else if (type_ == 'S') {
        if (auto p = parse_parameter_status(as_bytes(body_))) r.params.push_back(std::move(*p));
    }
    collect_ = false;
}

}  // namespace pgrouter::protocol
