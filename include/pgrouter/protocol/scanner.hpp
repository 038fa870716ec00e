// Incremental scanners over the two byte streams of a linked session. They find
// message boundaries without copying, so the pooler forwards raw bytes and only
// looks at the few messages it must understand. Pure; state carries across reads.
#pragma once

#include "pgrouter/protocol/protocol.hpp"

#include <string>
#include <utility>
#include <vector>

namespace pgrouter::protocol {

// Client -> server.
class FrontendScanner {
public:
    struct Result {
        std::size_t forward = 0;  // bytes from the start of the chunk to send to the server
        int sync_points = 0;      // Query, Sync and FunctionCall messages (each gets one ReadyForQuery)
        bool terminate = false;   // a Terminate message ends the chunk (not forwarded)
        const char* error = nullptr;
        char bad_type = 0;
    };
    Result scan(const char* data, std::size_t n);
    // Inside a message, or inside an extended-protocol batch not yet closed by Sync.
    bool partial() const { return remaining_ > 0 || hdr_len_ > 0; }
    bool unsynced() const { return unsynced_; }
    // After a failed or abandoned link, start clean.
    void reset() { *this = FrontendScanner{}; }
    // First message type seen in the last scan (for statement-level decisions).
    char last_type() const { return last_type_; }

private:
    std::size_t remaining_ = 0;  // body bytes of the current message still to come
    char hdr_[5]{};
    int hdr_len_ = 0;
    bool unsynced_ = false;
    char last_type_ = 0;
};

// Server -> client.
class BackendScanner {
public:
    struct Result {
        int ready_for_query = 0;     // ReadyForQuery messages seen
        char txn_status = 0;         // status of the last one
        bool error = false;          // malformed framing
        std::vector<std::pair<std::string, std::string>> params;  // ParameterStatus seen
        bool copy_in = false;        // CopyInResponse / CopyBothResponse seen
    };
    Result scan(const char* data, std::size_t n);
    bool partial() const { return remaining_ > 0 || hdr_len_ > 0; }
    void reset() { *this = BackendScanner{}; }

private:
    void on_body_complete(Result& r);
    std::size_t remaining_ = 0;
    char hdr_[5]{};
    int hdr_len_ = 0;
    char type_ = 0;
    bool collect_ = false;  // keep the body of this message (Z, S)
    std::string body_;
};

}  // namespace pgrouter::protocol
