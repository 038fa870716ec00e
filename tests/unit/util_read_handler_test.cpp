#include "pgrouter/util/read_handler.hpp"

#include <gtest/gtest.h>

#include <memory>

using pgrouter::util::ReadHandler;

namespace {

// Counts live copies, so a test sees every handler destroyed exactly once.
struct Probe {
    std::shared_ptr<int> calls;
    std::shared_ptr<int> live;
    Probe(std::shared_ptr<int> c, std::shared_ptr<int> l) : calls(std::move(c)), live(std::move(l)) { ++*live; }
    Probe(Probe&& o) noexcept : calls(o.calls), live(o.live) { ++*live; }
    ~Probe() { --*live; }
    void operator()(boost::system::error_code ec, std::size_t n) && {
        EXPECT_FALSE(ec);
        *calls += static_cast<int>(n);
    }
};

TEST(ReadHandler, EmptyByDefault) {
    ReadHandler h;
    EXPECT_FALSE(h);
    h.reset();  // no-op
    EXPECT_FALSE(h);
}

TEST(ReadHandler, CallsOnceAndEmpties) {
    auto calls = std::make_shared<int>(0), live = std::make_shared<int>(0);
    ReadHandler h(Probe(calls, live));
    EXPECT_TRUE(h);
    EXPECT_EQ(*live, 1);
    std::move(h)({}, 5);
    EXPECT_FALSE(h);
    EXPECT_EQ(*calls, 5);
    EXPECT_EQ(*live, 0);
}

TEST(ReadHandler, MoveKeepsOneHandler) {
    auto calls = std::make_shared<int>(0), live = std::make_shared<int>(0);
    ReadHandler a(Probe(calls, live));
    ReadHandler b(std::move(a));
    EXPECT_FALSE(a);
    EXPECT_TRUE(b);
    EXPECT_EQ(*live, 1);
    ReadHandler c;
    c = std::move(b);
    EXPECT_FALSE(b);
    EXPECT_EQ(*live, 1);
    std::move(c)({}, 2);
    EXPECT_EQ(*calls, 2);
    EXPECT_EQ(*live, 0);
}

TEST(ReadHandler, AssignmentDropsTheOldOne) {
    auto calls = std::make_shared<int>(0), live = std::make_shared<int>(0);
    ReadHandler h(Probe(calls, live));
    h = ReadHandler(Probe(calls, live));
    EXPECT_EQ(*live, 1);
    h.reset();
    EXPECT_EQ(*live, 0);
    EXPECT_EQ(*calls, 0);  // dropped, never called
}

TEST(ReadHandler, HandlerMayStoreTheNextOneWhileCalled) {
    // A coroutine resumed by the call waits for the next read at once: the holder is
    // empty while the handler runs, and the new handler must survive the call's end.
    struct Scene {
        std::shared_ptr<int> calls = std::make_shared<int>(0), live = std::make_shared<int>(0);
        ReadHandler slot;
    } sc;
    auto& slot = sc.slot;
    auto& calls = sc.calls;
    auto& live = sc.live;
    slot = ReadHandler([s = &sc](boost::system::error_code, std::size_t n) {
        EXPECT_FALSE(s->slot);
        *s->calls += static_cast<int>(n);
        s->slot = ReadHandler(Probe(s->calls, s->live));
    });
    std::move(slot)({}, 1);
    ASSERT_TRUE(slot);
    std::move(slot)({}, 10);
    EXPECT_EQ(*calls, 11);
    EXPECT_EQ(*live, 0);
}

TEST(ReadHandler, DestructorDropsTheHandler) {
    auto calls = std::make_shared<int>(0), live = std::make_shared<int>(0);
    { ReadHandler h(Probe(calls, live)); }
    EXPECT_EQ(*live, 0);
    EXPECT_EQ(*calls, 0);
}

}  // namespace
