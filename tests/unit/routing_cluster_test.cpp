#include "pgrouter/routing/cluster.hpp"

#include <gtest/gtest.h>

#include <set>

using namespace pgrouter;
using routing::BackendState;
using routing::Cluster;
using routing::Discovered;
using routing::Health;
using routing::HostPort;

namespace {
HostPort hp(int port) { return HostPort{"127.0.0.1", port}; }

config::ClusterConfig three_nodes() {
    config::ClusterConfig c;
    c.name = "main";
    c.primary = hp(5432);
    c.replicas = {hp(5433), hp(5434)};
    c.max_replica_lag = 1000;
    return c;
}

Health up(bool in_recovery, std::int64_t lag = 0, std::uint64_t lsn = 100) {
    Health h;
    h.state = BackendState::up;
    h.in_recovery = in_recovery;
    h.lsn = lsn;
    if (in_recovery) h.lag_bytes = lag;
    return h;
}

Health down() {
    Health h;
    h.state = BackendState::down;
    h.error = "connection refused";
    return h;
}

void all_healthy(Cluster& c) {
    c.report_health(hp(5432), up(false));
    c.report_health(hp(5433), up(true));
    c.report_health(hp(5434), up(true));
}
}  // namespace

TEST(RoutingCluster, PrimaryIsNotWritableUntilSeenOutOfRecovery) {
    Cluster c(three_nodes());
    EXPECT_FALSE(c.view()->writable);
    EXPECT_NE(c.view()->hold_reason.find("not checked"), std::string::npos);
    c.report_health(hp(5432), up(true));  // discovery may say primary; the node says otherwise
    EXPECT_FALSE(c.view()->writable);
    EXPECT_NE(c.view()->hold_reason.find("in recovery"), std::string::npos);
    c.report_health(hp(5432), up(false));
    EXPECT_TRUE(c.view()->writable);
    c.report_health(hp(5432), down());
    EXPECT_FALSE(c.view()->writable);
}

TEST(RoutingCluster, RoundRobinOverUsableReplicasSkipsLaggingAndDown) {
    Cluster c(three_nodes());
    all_healthy(c);
    std::multiset<int> seen;
    for (int i = 0; i < 10; ++i) seen.insert(c.next_replica()->port);
    EXPECT_EQ(seen.count(5433), 5u);
    EXPECT_EQ(seen.count(5434), 5u);
    c.report_health(hp(5434), up(true, 5000));  // beyond max_replica_lag
    EXPECT_EQ(c.view()->backends[2].health.state, BackendState::lagging);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(c.next_replica()->port, 5433);
    c.report_health(hp(5433), down());
    EXPECT_FALSE(c.next_replica());
    c.report_health(hp(5434), up(true, 10));
    EXPECT_EQ(c.next_replica()->port, 5434);
}

TEST(RoutingCluster, ZeroMaxLagMeansNoLimitAndNotInRecoveryIsNoReplica) {
    auto cfg = three_nodes();
    cfg.max_replica_lag = 0;
    Cluster c(cfg);
    c.report_health(hp(5433), up(true, 1 << 30));
    c.report_health(hp(5434), up(false));  // a promoted "replica" is not a replica
    for (int i = 0; i < 3; ++i) EXPECT_EQ(c.next_replica()->port, 5433);
}

TEST(RoutingCluster, FailoverMovesPrimaryAndOldPrimaryReturnsAsReplica) {
    Cluster c(three_nodes());
    all_healthy(c);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
    c.set_listener([&](const routing::View& b, const routing::View& a) { calls.emplace_back(b.primary_epoch, a.primary_epoch); });
    auto epoch = c.view()->primary_epoch;
    Discovered d;
    d.primaries = {hp(5433)};
    d.replicas = {hp(5434)};
    d.source = "consul";
    EXPECT_TRUE(c.apply(d));
    auto v = c.view();
    EXPECT_EQ(v->primary, hp(5433));
    EXPECT_GT(v->primary_epoch, epoch);
    ASSERT_FALSE(calls.empty());
    EXPECT_NE(calls.back().first, calls.back().second);
    // 5433 was last seen in recovery: no writes until a check sees it promoted.
    EXPECT_FALSE(v->writable);
    c.report_health(hp(5433), up(false));
    EXPECT_TRUE(c.view()->writable);
    // The old primary is down, then comes back in recovery: a replica again.
    c.report_health(hp(5432), down());
    for (int i = 0; i < 3; ++i) EXPECT_EQ(c.next_replica()->port, 5434);
    c.report_health(hp(5432), up(true));
    std::set<int> ports;
    for (int i = 0; i < 4; ++i) ports.insert(c.next_replica()->port);
    EXPECT_EQ(ports, (std::set<int>{5432, 5434}));
    // Same answer again: nothing changes.
    EXPECT_FALSE(c.apply(d));
}

TEST(RoutingCluster, SplitBrainKeepsWritableCurrentPrimaryOtherwiseHolds) {
    Cluster c(three_nodes());
    all_healthy(c);
    Discovered d;
    d.primaries = {hp(5432), hp(5433)};
    d.source = "consul";
    c.apply(d);
    EXPECT_EQ(c.view()->primary, hp(5432));
    EXPECT_TRUE(c.view()->writable);
    d.primaries = {hp(5433), hp(5434)};  // current one not among them
    c.apply(d);
    EXPECT_FALSE(c.view()->primary);
    EXPECT_FALSE(c.view()->writable);
    EXPECT_NE(c.view()->hold_reason.find("split brain"), std::string::npos);
    c.set_replicas({hp(5432)});  // a replica list does not end a split brain
    EXPECT_FALSE(c.view()->primary);
    EXPECT_NE(c.view()->hold_reason.find("split brain"), std::string::npos);
    d.primaries = {hp(5433)};
    c.apply(d);
    c.report_health(hp(5433), up(false));
    EXPECT_TRUE(c.view()->writable);
}

TEST(RoutingCluster, NoPrimaryHoldsWritesButKeepsReads) {
    Cluster c(three_nodes());
    all_healthy(c);
    Discovered d;
    d.replicas = {hp(5433), hp(5434)};
    d.source = "consul";
    c.apply(d);
    EXPECT_FALSE(c.view()->writable);
    EXPECT_TRUE(c.next_replica());
}

TEST(RoutingCluster, SetPrimaryAndReplicasKeepTheOtherHalf) {
    Cluster c(three_nodes());
    EXPECT_FALSE(c.set_primary(hp(5432)));  // same: no change
    EXPECT_TRUE(c.set_replicas({hp(5434)}));
    EXPECT_EQ(c.view()->primary, hp(5432));
    auto b = c.backends();
    EXPECT_EQ(b, (std::vector<HostPort>{hp(5432), hp(5434)}));
    EXPECT_TRUE(c.set_primary(hp(5434)));
    b = c.backends();
    EXPECT_EQ(b, (std::vector<HostPort>{hp(5434), hp(5432)}));  // old primary kept as a candidate replica
}

TEST(RoutingCluster, ReloadOfStaticTopologyReplacesIt) {
    Cluster c(three_nodes());
    c.set_primary(hp(5433));
    auto cfg = three_nodes();
    cfg.replicas = {hp(5434)};
    c.reconfigure(cfg);
    EXPECT_EQ(c.view()->primary, hp(5432));
    EXPECT_EQ(c.backends(), (std::vector<HostPort>{hp(5432), hp(5434)}));
}

TEST(RoutingCluster, NotWritableReportHoldsWrites) {
    Cluster c(three_nodes());
    all_healthy(c);
    int wakes = 0;
    c.set_wakeup([&] { ++wakes; });
    c.report_not_writable(hp(5432), "in_hot_standby=on");
    EXPECT_FALSE(c.view()->writable);
    EXPECT_EQ(wakes, 1);
}
