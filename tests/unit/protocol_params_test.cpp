// Parameter re-sync between clients sharing a server (session/params.hpp, pure).
#include "pgrouter/session/params.hpp"

#include <gtest/gtest.h>

#include <string>

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

TEST(Params, SameAsComparesValuesNotStorage) {
    ParamSet a, b;
    EXPECT_TRUE(a.same_as(b));
    a.set("TimeZone", "UTC");
    EXPECT_FALSE(a.same_as(b));
    b.set("TimeZone", "UTC");
    EXPECT_TRUE(a.same_as(b));  // equal values in two separate blobs
    b.set("TimeZone", "UTD");   // same length, other value
    EXPECT_FALSE(a.same_as(b));
    EXPECT_EQ(build_sync_sql(a, b), "SET TimeZone = 'UTC';");
    b.set("TimeZone", "UTC");
    b.set("application_name", "");  // present, even if empty
    EXPECT_FALSE(a.same_as(b));
    EXPECT_EQ(build_sync_sql(a, b), "");  // but nothing `a` asks for differs
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

TEST(Params, ValuesKeepTheirPlaceWhenOthersChange) {
    ParamSet p;
    EXPECT_FALSE(p.get(0));
    p.set("TimeZone", "UTC");
    p.set("client_encoding", "UTF8");
    p.set("application_name", "");
    p.set("default_transaction_read_only", "off");
    EXPECT_EQ(p.get(*tracked_index("TimeZone")), "UTC");
    // Longer, then shorter, then empty values in the middle move the ones after them.
    p.set("DateStyle", "ISO, MDY");
    p.set("TimeZone", "America/Argentina/Buenos_Aires");
    EXPECT_EQ(p.get(*tracked_index("DateStyle")), "ISO, MDY");
    p.set("DateStyle", "ISO");
    p.set("TimeZone", "");
    EXPECT_EQ(p.get(*tracked_index("client_encoding")), "UTF8");
    EXPECT_EQ(p.get(*tracked_index("DateStyle")), "ISO");
    EXPECT_EQ(p.get(*tracked_index("TimeZone")), "");
    EXPECT_TRUE(p.has(*tracked_index("application_name")));
    EXPECT_EQ(p.get(*tracked_index("application_name")), "");
    EXPECT_EQ(p.get(*tracked_index("default_transaction_read_only")), "off");
    EXPECT_FALSE(p.get(*tracked_index("IntervalStyle")));
    EXPECT_FALSE(p.get(*tracked_index("standard_conforming_strings")));
    // An empty value is a value: it differs from an unset one.
    ParamSet unset;
    EXPECT_EQ(build_sync_sql(p, unset),
              "SET client_encoding = 'UTF8';SET DateStyle = 'ISO';SET TimeZone = '';"
              "SET application_name = '';SET default_transaction_read_only = 'off';");
}


TEST(Params, EqualSetsShareTheirTextAndStayIndependent) {
    ParamSet a, b;
    for (auto* p : {&a, &b}) {
        p->set("client_encoding", "UTF8");
        p->set("application_name", "shared-application-name-longer-than-sso");
    }
    auto i = *tracked_index("application_name");
    EXPECT_NE(a.get(i)->data(), b.get(i)->data());  // each its own until shared
    a.share();
    b.share();
    EXPECT_EQ(a.get(i)->data(), b.get(i)->data());  // one string for both
    b.set("application_name", "other");
    EXPECT_EQ(a.get(i), "shared-application-name-longer-than-sso");
    EXPECT_EQ(b.get(i), "other");
    EXPECT_EQ(a.get(*tracked_index("client_encoding")), "UTF8");
    ParamSet c = a;  // copies share too, and a change to the copy is its own
    c.set("client_encoding", "LATIN1");
    EXPECT_EQ(a.get(*tracked_index("client_encoding")), "UTF8");
    EXPECT_EQ(c.get(*tracked_index("client_encoding")), "LATIN1");
    // Many short-lived distinct sets: the table of shared strings does not keep them.
    for (int k = 0; k < 10000; ++k) {
        ParamSet t;
        t.set("application_name", "app-" + std::to_string(k));
        t.share();
        EXPECT_EQ(t.get(i), "app-" + std::to_string(k));
    }
}

TEST(Params, RefusesValuesPastTheSizeLimit) {
    ParamSet p;
    p.set("TimeZone", "UTC");
    p.set("application_name", std::string(70000, 'x'));
    EXPECT_FALSE(p.has(*tracked_index("application_name")));
    EXPECT_EQ(p.get(*tracked_index("TimeZone")), "UTC");
    p.set("application_name", std::string(60000, 'y'));
    EXPECT_EQ(p.get(*tracked_index("application_name"))->size(), 60000u);
}

}  // namespace
}  // namespace pgrouter::session
