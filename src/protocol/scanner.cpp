#include "pgrouter/protocol/scanner.hpp"

#include <algorithm>
#include <cstring>

namespace pgrouter::protocol {

FrontendScanner::Result FrontendScanner::scan(const char* data, std::size_t n) {
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
    std::size_t i = 0;
    while (i < n) {
        if (remaining_ > 0) {
            std::size_t take = std::min(remaining_, n - i);
            if (collect_) body_.append(data + i, take);
            remaining_ -= take;
            i += take;
            if (remaining_ == 0) on_body_complete(r);
            continue;
        }
        std::size_t need = 5 - static_cast<std::size_t>(hdr_len_);
        std::size_t take = std::min(need, n - i);
        std::memcpy(hdr_ + hdr_len_, data + i, take);
        hdr_len_ += static_cast<int>(take);
        i += take;
        if (hdr_len_ < 5) break;
        hdr_len_ = 0;
        auto h = decode_backend_header(Bytes(reinterpret_cast<const std::byte*>(hdr_), 5));
        if (h.status == Decode::error) {
            r.error = true;
            return r;
        }
        type_ = h.header.type;
        remaining_ = h.header.body_size();
        collect_ = type_ == 'Z' || type_ == 'S';
        body_.clear();
        if (type_ == 'G' || type_ == 'W') r.copy_in = true;
        if (remaining_ == 0) on_body_complete(r);
    }
    return r;
}

void BackendScanner::on_body_complete(Result& r) {
    if (type_ == 'Z') {
        ++r.ready_for_query;
        r.txn_status = body_.empty() ? 'I' : body_[0];
    } else if (type_ == 'S') {
        if (auto p = parse_parameter_status(as_bytes(body_))) r.params.push_back(std::move(*p));
    }
    collect_ = false;
}

}  // namespace pgrouter::protocol
