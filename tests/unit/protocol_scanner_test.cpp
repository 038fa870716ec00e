// The stream scanners must give the same answers however the bytes are split
// across reads, and the capture/watch modes must reproduce the exact stream.
#include "pgrouter/protocol/prepared.hpp"
#include "pgrouter/protocol/scanner.hpp"

#include <gtest/gtest.h>

#include <random>

namespace pgrouter::protocol {
namespace {

std::string frontend(char type, std::string_view body) {
    std::string m(1, type);
    put_u32(m, static_cast<std::uint32_t>(body.size() + 4));
    m.append(body);
    return m;
}

std::string parse(std::string_view name, std::string_view sql) {
    std::string body(name);
    body.push_back('\0');
    body.append(sql);
    body.push_back('\0');
    body.append(2, '\0');  // no parameter types
    return frontend('P', body);
}

std::string bind_msg(std::string_view stmt) {
    std::string body(1, '\0');  // unnamed portal
    body.append(stmt);
    body.push_back('\0');
    body.append(6, '\0');  // no formats, no params, no result formats
    return frontend('B', body);
}

std::string execute() { return frontend('E', std::string("\0\0\0\0\0", 5)); }
std::string sync() { return frontend('S', ""); }

// A client stream: simple query, a named extended batch, COPY data, terminate.
std::string client_stream() {
    std::string s;
    write_query(s, "SELECT 1");
    s += parse("st", "SELECT $1::int");
    s += bind_msg("st");
    s += frontend('D', std::string("P\0", 2));
    s += execute();
    s += sync();
    s += frontend('d', std::string(300, 'x'));
    s += frontend('c', "");
    s += parse("", "SELECT 2");
    s += bind_msg("");
    s += execute();
    s += sync();
    return s;
}

struct Totals {
    int syncs = 0;
    std::string output;  // what capture mode would forward, messages verbatim
    bool terminate = false;
};

Totals scan_in_pieces(const std::string& s, const std::vector<std::size_t>& cuts, bool capture) {
    FrontendScanner sc;
    sc.set_capture(capture);
    Totals t;
    std::size_t at = 0;
    auto feed = [&](std::size_t end) {
        auto r = sc.scan(s.data() + at, end - at);
        EXPECT_EQ(r.error, nullptr);
        t.syncs += r.sync_points;
        if (capture) {
            for (auto& item : r.items)
                t.output += item.message >= 0 ? r.messages[static_cast<std::size_t>(item.message)]
                                              : s.substr(at + item.begin, item.end - item.begin);
        } else {
            t.output += s.substr(at, r.forward);
        }
        t.terminate |= r.terminate;
        at = end;
    };
    for (auto c : cuts) feed(c);
    feed(s.size());
    EXPECT_FALSE(sc.partial());
    return t;
}

TEST(FrontendScanner, SameAnswerAtEverySplitPoint) {
    auto s = client_stream();
    for (bool capture : {false, true}) {
        for (std::size_t cut = 0; cut <= s.size(); ++cut) {
            auto t = scan_in_pieces(s, {cut}, capture);
            EXPECT_EQ(t.syncs, 3) << "cut " << cut;
            EXPECT_EQ(t.output, s) << "capture " << capture << " cut " << cut;
        }
    }
}

TEST(FrontendScanner, RandomSplitsIntoManyPieces) {
    auto s = client_stream();
    std::mt19937 rng(7);
    for (int iter = 0; iter < 500; ++iter) {
        std::vector<std::size_t> cuts;
        for (std::size_t i = 1; i < s.size(); ++i)
            if (rng() % 7 == 0) cuts.push_back(i);
        for (bool capture : {false, true}) {
            auto t = scan_in_pieces(s, cuts, capture);
            EXPECT_EQ(t.syncs, 3);
            EXPECT_EQ(t.output, s);
        }
    }
}

TEST(FrontendScanner, CaptureHandsOverWholeStatementMessages) {
    std::string s = parse("st", "SELECT 1") + bind_msg("st") + execute() + sync();
    FrontendScanner sc;
    sc.set_capture(true);
    auto r = sc.scan(s.data(), 3);  // inside the Parse header
    EXPECT_TRUE(r.items.empty());
    r = sc.scan(s.data() + 3, s.size() - 3);
    ASSERT_EQ(r.messages.size(), 2u);
    EXPECT_EQ(r.messages[0], parse("st", "SELECT 1"));
    EXPECT_EQ(r.messages[1], bind_msg("st"));
    EXPECT_EQ(r.sync_points, 1);
    EXPECT_FALSE(sc.unsynced());
}

TEST(FrontendScanner, UnsyncedUntilSync) {
    FrontendScanner sc;
    auto p = parse("", "SELECT 1");
    sc.scan(p.data(), p.size());
    EXPECT_TRUE(sc.unsynced());
    auto s = sync();
    auto r = sc.scan(s.data(), s.size());
    EXPECT_EQ(r.sync_points, 1);
    EXPECT_FALSE(sc.unsynced());
}

TEST(FrontendScanner, TerminateStopsForwarding) {
    std::string s;
    write_query(s, "SELECT 1");
    std::size_t before = s.size();
    write_terminate(s);
    FrontendScanner sc;
    auto r = sc.scan(s.data(), s.size());
    EXPECT_TRUE(r.terminate);
    EXPECT_EQ(r.forward, before);
}

TEST(FrontendScanner, BadTypeAndLengthAreErrors) {
    for (auto bad : {frontend('p', "x"), frontend('Z', ""), std::string("S\0\0\0\5x", 6)}) {
        FrontendScanner sc;
        std::string s;
        write_query(s, "SELECT 1");
        std::size_t good = s.size();
        s += bad;
        auto r = sc.scan(s.data(), s.size());
        EXPECT_NE(r.error, nullptr);
        EXPECT_EQ(r.forward, good);
    }
}

TEST(FrontendScanner, MaxPacketSizeStopsAtTheHeader) {
    // max_packet_size counts the whole message: type byte, length and body.
    std::string q1, q2;
    write_query(q1, "SELECT 1");                     // 14 bytes
    write_query(q2, "SELECT '" + std::string(100, 'x') + "'");
    for (bool capture : {false, true}) {
        for (std::size_t cut : {std::size_t{0}, q1.size() + 3, q1.size() + 5, q1.size() + 20}) {
            FrontendScanner sc;
            sc.set_capture(capture);
            sc.set_max_message(static_cast<std::uint32_t>(q1.size()));
            std::string s = q1 + q2;
            auto r = sc.scan(s.data(), std::min(cut ? cut : s.size(), s.size()));
            if (cut && cut < q1.size() + 5) {  // the second header is not whole yet
                EXPECT_EQ(r.error, nullptr);
                r = sc.scan(s.data() + cut, s.size() - cut);
            }
            ASSERT_NE(r.error, nullptr) << capture << " " << cut;
            EXPECT_STREQ(r.error, FrontendScanner::kTooLarge);
        }
        FrontendScanner ok;  // exactly at the limit: fine; reset() keeps the limit
        ok.set_capture(capture);
        ok.set_max_message(static_cast<std::uint32_t>(q1.size()));
        EXPECT_EQ(ok.scan(q1.data(), q1.size()).error, nullptr);
        ok.reset();
        EXPECT_NE(ok.scan(q2.data(), q2.size()).error, nullptr);
    }
}

TEST(FrontendScanner, DisablePqexecRefusesQueryOnly) {
    std::string ext = parse("", "SELECT 1") + bind_msg("") + execute() + sync();
    std::string q;
    write_query(q, "SELECT 1; SELECT 2");
    for (bool capture : {false, true}) {
        FrontendScanner sc;
        sc.set_capture(capture);
        sc.set_refuse_simple_query(true);
        auto r = sc.scan(ext.data(), ext.size());
        EXPECT_EQ(r.error, nullptr);
        EXPECT_EQ(r.sync_points, 1);
        sc.reset();  // keeps the setting
        std::string s = ext + q;
        r = sc.scan(s.data(), s.size());
        ASSERT_NE(r.error, nullptr);
        EXPECT_STREQ(r.error, FrontendScanner::kQueryRefused);
        if (!capture) {
            EXPECT_EQ(r.forward, ext.size());  // what came before still goes
        }
    }
}

TEST(BackendScanner, MaxPacketSizeFlagsALongRow) {
    std::string small, big;
    write_data_row(small, {std::string(10, 'y')});
    write_data_row(big, {std::string(5000, 'y')});
    BackendScanner sc;
    sc.set_max_message(1000);
    auto r = sc.scan(small.data(), small.size());
    EXPECT_FALSE(r.error);
    r = sc.scan(big.data(), 3);  // a header in pieces
    EXPECT_FALSE(r.error);
    sc.reset();  // keeps the limit
    r = sc.scan(big.data(), big.size());
    EXPECT_TRUE(r.error);
    EXPECT_TRUE(r.too_large);
    BackendScanner framing;  // a bad length is an error, not "too large"
    std::string bad("D\0\0\0\2", 5);
    r = framing.scan(bad.data(), bad.size());
    EXPECT_TRUE(r.error);
    EXPECT_FALSE(r.too_large);
}

std::string backend_stream() {
    std::string s;
    s += frontend('1', "");                   // ParseComplete
    s += frontend('2', "");                   // BindComplete
    write_parameter_status(s, "TimeZone", "UTC");
    write_data_row(s, {std::string(5000, 'y'), std::nullopt});
    write_command_complete(s, "SELECT 1");
    write_ready_for_query(s, 'T');
    s += frontend('3', "");                   // CloseComplete
    write_ready_for_query(s, 'I');
    return s;
}

TEST(BackendScanner, SameAnswerAtEverySplitPoint) {
    auto s = backend_stream();
    for (std::size_t cut = 0; cut <= s.size(); ++cut) {
        BackendScanner sc;
        sc.set_watch(true);
        int rfq = 0;
        char status = 0;
        std::vector<std::pair<std::string, std::string>> params;
        std::string events;
        std::string rebuilt;  // the watched messages, cut out by their reported places
        std::string held;
        std::size_t at = 0;
        for (std::size_t end : {cut, s.size()}) {
            auto r = sc.scan(s.data() + at, end - at);
            EXPECT_FALSE(r.error);
            rfq += r.ready_for_query;
            if (r.ready_for_query) status = r.txn_status;
            for (auto& p : r.params) params.push_back(p);
            std::string v = held + s.substr(at, end - at);
            for (auto& ev : r.events) {
                events.push_back(ev.type);
                EXPECT_EQ(ev.end - ev.begin, ev.type == 'Z' ? 6 : 5);
                if (ev.type == 'Z') continue;  // only the hideable ones must be whole in held + chunk
                rebuilt += v.substr(static_cast<std::size_t>(static_cast<long>(held.size()) + ev.begin),
                                    static_cast<std::size_t>(ev.end - ev.begin));
            }
            std::size_t keep = (end - at) - static_cast<std::size_t>(sc.partial_header());
            held = s.substr(at + keep, end - at - keep);
            at = end;
        }
        EXPECT_EQ(rfq, 2) << cut;
        EXPECT_EQ(status, 'I') << cut;
        ASSERT_EQ(params.size(), 1u) << cut;
        EXPECT_EQ(params[0].second, "UTC");
        EXPECT_EQ(events, "1Z3Z") << cut;
        EXPECT_EQ(rebuilt, frontend('1', "") + frontend('3', "")) << cut;
        EXPECT_FALSE(sc.partial());
    }
}

TEST(BackendScanner, DiscardAllAndDeallocateAllAreEventsAtEverySplitPoint) {
    std::string s;
    write_command_complete(s, "SELECT 1");
    write_command_complete(s, "DISCARD ALL");
    write_ready_for_query(s, 'I');
    write_command_complete(s, "DEALLOCATE");  // one statement by name: not ours to track
    write_command_complete(s, "DEALLOCATE ALL");
    write_ready_for_query(s, 'I');
    for (std::size_t cut = 0; cut <= s.size(); ++cut) {
        for (bool watch : {true, false}) {
            BackendScanner sc;
            sc.set_watch(watch);
            std::string events;
            std::size_t at = 0;
            for (std::size_t end : {cut, s.size()}) {
                auto r = sc.scan(s.data() + at, end - at);
                EXPECT_FALSE(r.error);
                for (auto& ev : r.events) events.push_back(ev.type);
                at = end;
            }
            EXPECT_EQ(events, watch ? "XZXZ" : "") << cut;
        }
    }
}

TEST(Prepared, RenameAndGlobalNames) {
    auto p1 = parse("a", "SELECT $1::int");
    auto p2 = parse("b", "SELECT $1::int");
    auto p3 = parse("a", "SELECT $1::text");
    auto g1 = global_statement_name(p1), g2 = global_statement_name(p2), g3 = global_statement_name(p3);
    ASSERT_TRUE(g1 && g2 && g3);
    EXPECT_EQ(*g1, *g2);  // same text: one server statement
    EXPECT_NE(*g1, *g3);
    auto renamed = rename_statement(bind_msg("a"), *g1);
    ASSERT_TRUE(renamed);
    EXPECT_EQ(*renamed, bind_msg(*g1));
    auto ref = statement_of(*renamed);
    ASSERT_TRUE(ref);
    EXPECT_EQ(ref->name, *g1);
    // Portal messages are not statements.
    auto d = frontend('D', std::string("P\0", 2));
    EXPECT_FALSE(statement_of(d)->is_statement);
    EXPECT_FALSE(rename_statement(d, "x"));
    std::string c;
    write_close_statement(c, "st");
    EXPECT_EQ(c, frontend('C', std::string("Sst\0", 4)));
    // Truncated messages: a name found always lies inside the bytes given.
    for (auto m : {p1, bind_msg("a"), d, c}) {
        for (std::size_t n = 0; n < m.size(); ++n) {
            std::string prefix = m.substr(0, n);
            if (auto r = statement_of(prefix)) {
                EXPECT_LE(r->name.data() + r->name.size(), prefix.data() + prefix.size());
            }
            global_statement_name(prefix);
            rename_statement(prefix, "x");
        }
    }
    EXPECT_FALSE(statement_of(std::string("P\0\0\0\6a", 6)));  // no NUL after the name
}

}  // namespace
}  // namespace pgrouter::protocol

namespace pgrouter::protocol {
namespace {
TEST(FrontendScanner, CaptureLeavesUnnamedStatementsInPlace) {
    std::string s = parse("", "SELECT 1") + bind_msg("") + execute() + sync();
    FrontendScanner sc;
    sc.set_capture(true);
    auto r = sc.scan(s.data(), s.size());
    EXPECT_TRUE(r.messages.empty());
    ASSERT_EQ(r.items.size(), 1u);
    EXPECT_EQ(r.items[0].begin, 0u);
    EXPECT_EQ(r.items[0].end, s.size());
}
}  // namespace
}  // namespace pgrouter::protocol
