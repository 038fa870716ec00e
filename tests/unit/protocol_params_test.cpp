// Parameter re-sync between clients sharing a server (session/params.hpp, pure).
#include "pgrouter/session/params.hpp"

#include <gtest/gtest.h>

namespace pgrouter::session {
namespace {

TEST(Params, TrackedNamesAreCaseInsensitive) {
    EXPECT_TRUE(tracked_index("TimeZone"));
    EXPECT_EQ(tracked_index("timezone"), tracked_index("TimeZone"));
    EXPECT_EQ(tracked_index("DATESTYLE"), tracked_index("DateStyle"));
    EXPECT_FALSE(tracked_index("work_mem"));
    EXPECT_FALSE(tracked_index(""));
}

TEST(Params, NothingToDoWhenInStep) {
    ParamSet a, b;
    a.set("TimeZone", "UTC");
    b.set("timezone", "UTC");
    EXPECT_EQ(build_sync_sql(a, b), "");
    EXPECT_EQ(build_sync_sql(ParamSet{}, b), "");  // the client asks nothing
}

TEST(Params, SetsOnlyWhatDiffersWithQuoting) {
    ParamSet want, have;
    want.set("application_name", "it's a\\b");
    want.set("TimeZone", "Asia/Tokyo");
    want.set("client_encoding", "UTF8");
    have.set("TimeZone", "UTC");
    have.set("client_encoding", "UTF8");
    EXPECT_EQ(build_sync_sql(want, have),
              "SET TimeZone = 'Asia/Tokyo';SET application_name = E'it''s a\\\\b';");
    EXPECT_FALSE(want.set("search_path", "x"));  // not tracked
}

}  // namespace
}  // namespace pgrouter::session
