// Incremental scanners over the two byte streams of a linked session. They find
// message boundaries without copying, so the pooler forwards raw bytes and only
// looks at the few messages it must understand. Pure; state carries across reads.
#pragma once

#include "pgrouter/protocol/protocol.hpp"

#include <boost/container/small_vector.hpp>

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
        // Capture mode only: the output in order, as ranges of the chunk or whole
        // Parse/Bind/Describe/Close messages (header included) to be rewritten.
        struct Item {
            std::size_t begin = 0, end = 0;  // chunk range, when message < 0
            int message = -1;                // index into `messages`
            int syncs_before = 0;            // sync points earlier in this chunk
        };
        boost::container::small_vector<Item, 4> items;  // no allocation for the common chunk
        std::vector<std::string> messages;
    };
    Result scan(const char* data, std::size_t n);
    // Named prepared statements need Parse/Bind/Describe/Close whole: turn it on
    // for transaction and statement pooling with max_prepared_statements > 0.
    void set_capture(bool on) { capture_ = on; }
    bool capture() const { return capture_; }
    // Inside a message, or inside an extended-protocol batch not yet closed by Sync.
    bool partial() const { return remaining_ > 0 || hdr_len_ > 0; }
    bool unsynced() const { return unsynced_; }
    // After a failed or abandoned link, start clean.
    void reset() {
        bool c = capture_;
        auto m = max_total_;
        bool q = refuse_query_;
        *this = FrontendScanner{};
        capture_ = c;
        max_total_ = m;
        refuse_query_ = q;
    }
    // max_packet_size: a message longer than this (type byte and length included) is
    // an error, reported at its header before any of it is forwarded.
    void set_max_message(std::uint32_t total) { max_total_ = total; }
    static constexpr const char* kTooLarge = "message larger than max_packet_size";
    // disable_pqexec: a Query message (simple protocol) is an error, as kTooLarge.
    void set_refuse_simple_query(bool on) { refuse_query_ = on; }
    static constexpr const char* kQueryRefused = "simple query protocol disabled (disable_pqexec)";
    // First message type seen in the last scan (for statement-level decisions).
    char last_type() const { return last_type_; }

private:
    Result scan_capture(const char* data, std::size_t n);
    void apply_policy(HeaderResult& h) const;  // max_packet_size, disable_pqexec
    bool note_type(char t, Result& r);  // sync points and flags; false on a bad type
    std::size_t remaining_ = 0;  // body bytes of the current message still to come
    char hdr_[5]{};
    int hdr_len_ = 0;
    bool unsynced_ = false;
    char last_type_ = 0;
    bool capture_ = false;
    bool capturing_ = false;  // the current message is being collected into captured_
    std::uint32_t max_total_ = 0xffffffff;
    bool refuse_query_ = false;
    std::string captured_;
};

// Server -> client.
class BackendScanner {
public:
    struct Result {
        int ready_for_query = 0;     // ReadyForQuery messages seen
        char txn_status = 0;         // status of the last one
        bool error = false;          // malformed framing
        bool too_large = false;      // (with error) a message longer than max_packet_size
        std::vector<std::pair<std::string, std::string>> params;  // ParameterStatus seen
        bool copy_in = false;        // CopyInResponse / CopyBothResponse seen
        // Watch mode only: ParseComplete, CloseComplete and ReadyForQuery in order,
        // with their place in the chunk (begin < 0: the header began in earlier chunks),
        // and 'X' for a CommandComplete of DISCARD ALL or DEALLOCATE ALL (the server
        // dropped every prepared statement).
        struct Event {
            char type;
            long begin, end;
        };
        boost::container::small_vector<Event, 4> events;
    };
    Result scan(const char* data, std::size_t n);
    bool partial() const { return remaining_ > 0 || hdr_len_ > 0; }
    // Bytes of a header not yet complete at the end of the last chunk.
    int partial_header() const { return remaining_ == 0 ? hdr_len_ : 0; }
    void set_watch(bool on) { watch_ = on; }
    bool watch() const { return watch_; }
    void reset() {
        bool w = watch_;
        auto m = max_total_;
        *this = BackendScanner{};
        watch_ = w;
        max_total_ = m;
    }
    // max_packet_size, as FrontendScanner::set_max_message.
    void set_max_message(std::uint32_t total) { max_total_ = total; }

private:
    void on_body_complete(Result& r, long end);
    bool watch_ = false;
    std::uint32_t max_total_ = 0xffffffff;
    long msg_begin_ = 0;        // where the current message began, in the current chunk
    std::size_t last_n_ = 0;    // size of the previous chunk
    std::size_t remaining_ = 0;
    char hdr_[5]{};
    int hdr_len_ = 0;
    char type_ = 0;
    bool collect_ = false;  // keep the body of this message (Z, S; in watch mode a C that may be DISCARD/DEALLOCATE ALL)
    std::string body_;
};

}  // namespace pgrouter::protocol
