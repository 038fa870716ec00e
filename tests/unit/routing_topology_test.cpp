// routing::select_consul / select_patroni / parse_host_port (consul-patroni.md §1.2, §4, §5.2).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "pgrouter/routing/topology.hpp"

namespace rt = pgrouter::routing;
using rt::HostPort;

namespace {

const std::vector<std::string> kPatroniPrimary{"master", "primary"};
const std::vector<std::string> kPatroniReplica{"replica"};
const std::vector<std::string> kNoTags{};

struct Check {
    std::string id;          // CheckID
    std::string status;      // passing | warning | critical | ...
    bool node_level = false; // ServiceID ""
};

struct Entry {
    std::string node;          // Node.Node
    std::string node_address;  // Node.Address
    std::string service = "postgresql-ha";
    std::string service_address;  // "" = use the node's
    int port = 5432;
    std::vector<std::string> tags;
    std::string serf = "passing";  // "" = no serfHealth check
    std::string service_status = "passing";
    std::vector<Check> extra;  // more checks
};

std::string json_list(const std::vector<std::string>& v) {
    std::string out = "[";
    for (std::size_t i = 0; i < v.size(); ++i) out += (i ? "," : "") + ("\"" + v[i] + "\"");
    return out + "]";
}

std::string check_json(const Entry& e, const std::string& id, const std::string& status, bool node_level) {
    std::string sid = node_level ? "" : e.service + "/" + e.node;
    return R"({"Node":")" + e.node + R"(","CheckID":")" + id + R"(","Name":"x","Status":")" + status +
           R"(","Notes":"","Output":"out","ServiceID":")" + sid + R"(","ServiceName":")" +
           (node_level ? "" : e.service) + R"(","ServiceTags":)" + (node_level ? "[]" : json_list(e.tags)) +
           R"(,"Type":"","Definition":{},"CreateIndex":1,"ModifyIndex":1})";
}

// One ServiceEntry in the exact shape of GET /v1/health/service/:service.
std::string entry_json(const Entry& e) {
    std::string checks;
    auto add = [&](const std::string& c) { checks += (checks.empty() ? "" : ",") + c; };
    if (!e.serf.empty()) add(check_json(e, "serfHealth", e.serf, true));
    if (!e.service_status.empty()) add(check_json(e, "service:" + e.service + "/" + e.node, e.service_status, false));
    for (const auto& c : e.extra) add(check_json(e, c.id, c.status, c.node_level));
    return R"({"Node":{"ID":"40e4a748","Node":")" + e.node + R"(","Address":")" + e.node_address +
           R"(","Datacenter":"dc1","TaggedAddresses":{"lan":")" + e.node_address +
           R"("},"Meta":{"consul-network-segment":""},"CreateIndex":13,"ModifyIndex":13},)" +
           R"("Service":{"ID":")" + e.service + "/" + e.node + R"(","Service":")" + e.service +
           R"(","Tags":)" + json_list(e.tags) + R"(,"Address":")" + e.service_address +
           R"(","Meta":{},"Port":)" + std::to_string(e.port) +
           R"(,"Weights":{"Passing":1,"Warning":1},"EnableTagOverride":true,"Namespace":"default"},)" +
           R"("Checks":[)" + checks + "]}";
}

std::string body(const std::vector<Entry>& es) {
    std::string out = "[";
    for (std::size_t i = 0; i < es.size(); ++i) out += (i ? "," : "") + entry_json(es[i]);
    return out + "]\n";
}

HostPort hp(const std::string& h, int p = 5432) { return HostPort{h, p}; }

rt::Discovered consul_ok(const std::string& b, const std::vector<std::string>& pt = kPatroniPrimary,
                         const std::vector<std::string>& rt_ = kPatroniReplica) {
    std::string err;
    auto d = rt::select_consul(b, pt, rt_, err);
    EXPECT_TRUE(d.has_value()) << err << "\n" << b;
    if (!d) return {};
    EXPECT_TRUE(err.empty());
    EXPECT_EQ(d->source, "consul");
    EXPECT_EQ(d->replica_lag.size(), d->replicas.size());
    return *d;
}

std::string consul_error(const std::string& b) {
    std::string err;
    auto d = rt::select_consul(b, kPatroniPrimary, kPatroniReplica, err);
    EXPECT_FALSE(d.has_value()) << b;
    EXPECT_FALSE(err.empty()) << b;
    return err;
}

// Patroni-registered service: tags "master"/"primary" on the leader, "replica" on the others.
Entry make(std::string node, std::string node_address, std::string service_address,
           std::vector<std::string> tags, std::string service_status = "passing") {
    Entry e;
    e.node = std::move(node);
    e.node_address = std::move(node_address);
    e.service_address = std::move(service_address);
    e.tags = std::move(tags);
    e.service_status = std::move(service_status);
    return e;
}

// Patroni-registered service: tags "master"/"primary" on the leader, "replica" on the others.
std::vector<Entry> patroni_cluster() {
    return {
        make("pg-node-1", "10.6.0.31", "10.6.0.31", {"replica"}),
        make("pg-node-2", "10.6.0.32", "10.6.0.32", {"primary", "master"}),
        make("pg-node-3", "10.6.0.33", "10.6.0.33", {"replica"}),
    };
}

// GitLab's own `postgresql` service: no tags, address "", leader passing, replicas warning.
std::vector<Entry> gitlab_cluster() {
    std::vector<Entry> es = {
        make("pg1.example.com", "10.6.0.31", "", {}, "warning"),
        make("pg2.example.com", "10.6.0.32", "", {}, "passing"),
        make("pg3.example.com", "10.6.0.33", "", {}, "warning"),
    };
    for (auto& e : es) e.service = "postgresql";
    return es;
}

}  // namespace

// ---- host:port --------------------------------------------------------------------------------

TEST(RoutingHostPort, ParsesHostPortForms) {
    std::string err;
    EXPECT_EQ(rt::parse_host_port("10.0.0.2:5433", err), hp("10.0.0.2", 5433));
    EXPECT_EQ(rt::parse_host_port("db.example.com", err), hp("db.example.com", 5432));
    EXPECT_EQ(rt::parse_host_port("db:1", err), hp("db", 1));
    EXPECT_EQ(rt::parse_host_port("db:65535", err), hp("db", 65535));
    EXPECT_EQ(rt::parse_host_port("[::1]:6432", err), hp("::1", 6432));
    EXPECT_EQ(rt::parse_host_port("[fe80::1%eth0]", err), hp("fe80::1%eth0", 5432));
    EXPECT_EQ(rt::parse_host_port("  10.0.0.3:5432 ", err), hp("10.0.0.3", 5432));
    EXPECT_EQ(rt::parse_host_port("/tmp:6432", err), hp("/tmp", 6432));
    EXPECT_TRUE(err.empty()) << err;
}

TEST(RoutingHostPort, RejectsMalformed) {
    for (const char* bad : {"", " ", "db:", "db:0", "db:65536", "db:-1", "db:54x", "db:123456", ":5432", "::1",
                            "fe80::1:5432", "[::1", "[]:5432", "[::1]5432", "[::1]:", "a,b:5432", "db:5432:1",
                            "db name:5432"}) {
        std::string err;
        EXPECT_FALSE(rt::parse_host_port(bad, err).has_value()) << bad;
        EXPECT_FALSE(err.empty()) << bad;
    }
}

TEST(RoutingHostPort, ToStringRoundTrips) {
    EXPECT_EQ(rt::to_string(hp("10.0.0.2", 5432)), "10.0.0.2:5432");
    EXPECT_EQ(rt::to_string(hp("::1", 6432)), "[::1]:6432");
    EXPECT_EQ(rt::to_string(hp("/var/run/postgresql", 5432)), "/var/run/postgresql:5432");
    for (const auto& h : {hp("db.example.com", 5433), hp("2001:db8::7", 5432), hp("10.1.2.3", 1)}) {
        std::string err;
        EXPECT_EQ(rt::parse_host_port(rt::to_string(h), err), h) << err;
    }
}

// ---- Consul, Patroni's tagged service ------------------------------------------------------------

TEST(RoutingConsul, PatroniTaggedPrimaryAndReplicas) {
    auto d = consul_ok(body(patroni_cluster()));
    EXPECT_EQ(d.primaries, std::vector<HostPort>{hp("10.6.0.32")});
    EXPECT_EQ(d.replicas, (std::vector<HostPort>{hp("10.6.0.31"), hp("10.6.0.33")}));
    for (const auto& l : d.replica_lag) EXPECT_FALSE(l.has_value());
}

TEST(RoutingConsul, ReplicaWarningStaysReplicaCriticalNodeIsDropped) {
    auto es = patroni_cluster();
    es[0].service_status = "warning";  // replica check warning: still a replica
    es[2].serf = "critical";           // node down: neither
    auto d = consul_ok(body(es));
    EXPECT_EQ(d.primaries, std::vector<HostPort>{hp("10.6.0.32")});
    EXPECT_EQ(d.replicas, std::vector<HostPort>{hp("10.6.0.31")});
}

TEST(RoutingConsul, ReplicaWithCriticalServiceCheckIsDropped) {
    auto es = patroni_cluster();
    es[0].service_status = "critical";
    es[2].service_status = "failing";  // not a Consul status: counts as critical
    auto d = consul_ok(body(es));
    EXPECT_TRUE(d.replicas.empty());
    EXPECT_EQ(d.primaries.size(), 1u);
}

TEST(RoutingConsul, ServiceMaintenanceModeDisqualifiesPrimary) {
    auto es = patroni_cluster();
    es[1].extra.push_back({"_service_maintenance:postgresql-ha/pg-node-2", "critical", false});
    auto d = consul_ok(body(es));
    EXPECT_TRUE(d.primaries.empty());
    EXPECT_EQ(d.replicas.size(), 2u);  // the tagged primary has no "replica" tag
}

TEST(RoutingConsul, NodeMaintenanceModeDisqualifiesPrimary) {
    auto es = patroni_cluster();
    es[1].extra.push_back({"_node_maintenance", "critical", true});
    auto d = consul_ok(body(es));
    EXPECT_TRUE(d.primaries.empty());
}

TEST(RoutingConsul, NodeLevelWarningMakesNodeUnhealthy) {
    auto es = patroni_cluster();
    es[0].extra.push_back({"disk", "warning", true});
    auto d = consul_ok(body(es));
    EXPECT_EQ(d.replicas, std::vector<HostPort>{hp("10.6.0.33")});
}

TEST(RoutingConsul, ChecksOfOtherServicesAreIgnored) {
    auto es = patroni_cluster();
    Check other{"service:node-exporter", "critical", false};
    es[1].extra.push_back(other);
    // check_json names the instance's own ServiceID; build an unrelated one by hand.
    std::string b = body(es);
    auto pos = b.find(R"("CheckID":"service:node-exporter")");
    ASSERT_NE(pos, std::string::npos);
    auto sid = b.find(R"("ServiceID":"postgresql-ha/pg-node-2")", pos);
    ASSERT_NE(sid, std::string::npos);
    b.replace(sid, std::string(R"("ServiceID":"postgresql-ha/pg-node-2")").size(), R"("ServiceID":"node-exporter")");
    auto d = consul_ok(b);
    EXPECT_EQ(d.primaries, std::vector<HostPort>{hp("10.6.0.32")});
}

TEST(RoutingConsul, PrimaryTagIsRequiredWhenTagsGiven) {
    auto es = patroni_cluster();
    es[1].tags = {"replica"};
    auto d = consul_ok(body(es));
    EXPECT_TRUE(d.primaries.empty());
    EXPECT_EQ(d.replicas.size(), 3u);
}

TEST(RoutingConsul, TagsAreCaseSensitive) {
    auto es = patroni_cluster();
    es[1].tags = {"Master"};
    EXPECT_TRUE(consul_ok(body(es)).primaries.empty());
}

TEST(RoutingConsul, ServicePortAndAddressFallback) {
    auto es = patroni_cluster();
    es[1].service_address = "";
    es[1].port = 6543;
    es[0].port = 0;  // 0 = default 5432
    es[2].service_address = "2001:db8::33";
    auto d = consul_ok(body(es));
    EXPECT_EQ(d.primaries, std::vector<HostPort>{hp("10.6.0.32", 6543)});
    EXPECT_EQ(d.replicas, (std::vector<HostPort>{hp("10.6.0.31"), hp("2001:db8::33")}));
    EXPECT_EQ(rt::to_string(d.replicas[1]), "[2001:db8::33]:5432");
}

TEST(RoutingConsul, SplitBrainListsEveryCandidateInInputOrder) {
    auto es = patroni_cluster();
    es[2].tags = {"master"};
    auto d = consul_ok(body(es));
    EXPECT_EQ(d.primaries, (std::vector<HostPort>{hp("10.6.0.32"), hp("10.6.0.33")}));
    EXPECT_EQ(d.replicas, std::vector<HostPort>{hp("10.6.0.31")});
}

TEST(RoutingConsul, SameAddressTwiceIsOneCandidate) {
    auto es = patroni_cluster();
    Entry dup = es[1];
    dup.node = "pg-node-2b";
    es.push_back(dup);
    auto d = consul_ok(body(es));
    EXPECT_EQ(d.primaries, std::vector<HostPort>{hp("10.6.0.32")});
}

TEST(RoutingConsul, NoPrimaryWhenEveryNodeCritical) {
    auto es = patroni_cluster();
    for (auto& e : es) e.serf = "critical";
    auto d = consul_ok(body(es));
    EXPECT_TRUE(d.primaries.empty());
    EXPECT_TRUE(d.replicas.empty());
}

TEST(RoutingConsul, PrimaryNeedsAServiceCheck) {
    auto es = patroni_cluster();
    es[1].service_status = "";  // no service check at all: cannot be proven primary
    EXPECT_TRUE(consul_ok(body(es)).primaries.empty());
}

TEST(RoutingConsul, NullAndEmptyMeanNoInstances) {
    for (const char* b : {"null", "[]", " null\n", "[]\n"}) {
        auto d = consul_ok(b);
        EXPECT_TRUE(d.primaries.empty()) << b;
        EXPECT_TRUE(d.replicas.empty()) << b;
    }
}

// ---- Consul, GitLab's untagged `postgresql` service --------------------------------------------

TEST(RoutingConsul, GitLabUntaggedService) {
    auto d = consul_ok(body(gitlab_cluster()), kNoTags, kNoTags);
    EXPECT_EQ(d.primaries, std::vector<HostPort>{hp("10.6.0.32")});  // Service.Address "" -> Node.Address
    EXPECT_EQ(d.replicas, (std::vector<HostPort>{hp("10.6.0.31"), hp("10.6.0.33")}));
}

TEST(RoutingConsul, GitLabStartupFailingStatusIsNotLeader) {
    auto es = gitlab_cluster();
    es[1].service_status = "failing";  // Omnibus's initial status
    auto d = consul_ok(body(es), kNoTags, kNoTags);
    EXPECT_TRUE(d.primaries.empty());
    EXPECT_EQ(d.replicas.size(), 2u);
}

TEST(RoutingConsul, GitLabTwoLeadersIsSplitBrain) {
    auto es = gitlab_cluster();
    es[0].service_status = "passing";
    auto d = consul_ok(body(es), kNoTags, kNoTags);
    EXPECT_EQ(d.primaries, (std::vector<HostPort>{hp("10.6.0.31"), hp("10.6.0.32")}));
    EXPECT_EQ(d.replicas, std::vector<HostPort>{hp("10.6.0.33")});
}

TEST(RoutingConsul, GitLabLeaderOnDeadNodeIsNoPrimary) {
    auto es = gitlab_cluster();
    es[1].serf = "critical";
    auto d = consul_ok(body(es), kNoTags, kNoTags);
    EXPECT_TRUE(d.primaries.empty());
    EXPECT_EQ(d.replicas.size(), 2u);
}

TEST(RoutingConsul, MinimalEntryWithUnknownFields) {
    const char* b = R"([{"Node":{"Address":"10.0.0.1","Future":{"x":[1,2]}},
                        "Service":{"ID":"pg","Service":"pg","Tags":null,"Address":"","Port":5433},
                        "Checks":[{"Status":"passing","ServiceID":""},{"Status":"passing","ServiceID":"pg"}],
                        "PeerName":""}])";
    auto d = consul_ok(b, kNoTags, kNoTags);
    EXPECT_EQ(d.primaries, std::vector<HostPort>{hp("10.0.0.1", 5433)});
}

TEST(RoutingConsul, ServiceIdDefaultsToServiceName) {
    const char* b = R"([{"Node":{"Address":"10.0.0.1"},"Service":{"Service":"pg","Port":5432},
                        "Checks":[{"Status":"passing","ServiceID":"pg"}]}])";
    EXPECT_EQ(consul_ok(b, kNoTags, kNoTags).primaries.size(), 1u);
}

TEST(RoutingConsul, NullChecksMeansNoChecks) {
    const char* b = R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"pg","Port":5432},"Checks":null}])";
    auto d = consul_ok(b, kNoTags, kNoTags);
    EXPECT_TRUE(d.primaries.empty());
    EXPECT_EQ(d.replicas, std::vector<HostPort>{hp("10.0.0.1")});
}

TEST(RoutingConsul, InvalidJsonIsAnError) {
    for (const char* b : {"", "   ", "[", "{\"Node\":", "nul", "[{}]]", "\x01\x02", "[1,]"}) {
        auto err = consul_error(b);
        EXPECT_NE(err.find("JSON"), std::string::npos) << b << ": " << err;
    }
}

TEST(RoutingConsul, WrongShapeIsAnError) {
    const char* cases[] = {
        "{}",
        "42",
        "\"text\"",
        "true",
        "[1]",
        "[null]",
        "[[]]",
        R"([{"Service":{"ID":"a","Port":5432},"Checks":[]}])",                              // no Node
        R"([{"Node":{"Address":"10.0.0.1"},"Checks":[]}])",                                 // no Service
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a"}}])",                        // no Checks
        R"([{"Node":"n","Service":{"ID":"a"},"Checks":[]}])",                               // Node not object
        R"([{"Node":{"Address":"10.0.0.1"},"Service":[],"Checks":[]}])",                    // Service not object
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a"},"Checks":"passing"}])",     // Checks not array
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a"},"Checks":[7]}])",           // check not object
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a"},"Checks":[{"Status":1}]}])",
        R"([{"Node":{"Address":10},"Service":{"ID":"a"},"Checks":[]}])",
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Port":"5432"},"Checks":[]}])",
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Port":70000},"Checks":[]}])",
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Port":-1},"Checks":[]}])",
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Port":5432.5},"Checks":[]}])",
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Tags":"master"},"Checks":[]}])",
        R"([{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"a","Tags":[1]},"Checks":[]}])",
        R"([{"Node":{},"Service":{"ID":"a","Address":""},"Checks":[]}])",                   // no address
        R"([{"node":{"Address":"10.0.0.1"},"service":{"ID":"a"},"checks":[]}])",           // case-sensitive
    };
    for (const char* b : cases) consul_error(b);
}

TEST(RoutingConsul, OneBadEntryRejectsTheWholeAnswer) {
    std::string b = body(patroni_cluster());
    b.insert(b.rfind(']'), ",{\"Node\":1}");
    consul_error(b);
}

TEST(RoutingConsul, DeepNestingIsAnErrorNotACrash) {
    std::string b(100000, '[');
    consul_error(b);
    b += std::string(100000, ']');
    consul_error(b);
}

// ---- Patroni /cluster ------------------------------------------------------------------------

TEST(RoutingPatroni, LeaderReplicaSyncStandby) {
    const char* b = R"({
      "members": [
        {"name":"patroni1","role":"leader","state":"running","api_url":"http://10.89.0.4:8008/patroni",
         "host":"10.89.0.4","port":5432,"timeline":5,"tags":{"clonefrom":true}},
        {"name":"patroni2","role":"replica","state":"streaming","api_url":"http://10.89.0.6:8008/patroni",
         "host":"10.89.0.6","port":5433,"timeline":5,"tags":{"clonefrom":true},
         "receive_lag":0,"receive_lsn":"0/4000060","replay_lag":0,"replay_lsn":"0/4000060","lag":0,"lsn":"0/4000060"},
        {"name":"patroni3","role":"sync_standby","state":"running","host":"10.89.0.7","port":5432,"lag":1048576},
        {"name":"patroni4","role":"quorum_standby","state":"streaming","host":"10.89.0.8","port":5432,"lag":"unknown"}
      ],
      "scope": "demo", "pause": true,
      "scheduled_switchover": {"at":"2023-09-24T10:36:00+02:00","from":"patroni1","to":"patroni3"}
    })";
    std::string err;
    auto d = rt::select_patroni(b, err);
    ASSERT_TRUE(d) << err;
    EXPECT_EQ(d->source, "patroni");
    EXPECT_EQ(d->primaries, std::vector<HostPort>{hp("10.89.0.4")});
    EXPECT_EQ(d->replicas, (std::vector<HostPort>{hp("10.89.0.6", 5433), hp("10.89.0.7"), hp("10.89.0.8")}));
    ASSERT_EQ(d->replica_lag.size(), 3u);
    EXPECT_EQ(d->replica_lag[0], 0);
    EXPECT_EQ(d->replica_lag[1], 1048576);
    EXPECT_FALSE(d->replica_lag[2].has_value());
}

TEST(RoutingPatroni, StatesThatDoNotCount) {
    const char* b = R"({"members":[
        {"name":"a","role":"leader","state":"starting","host":"10.0.0.1","port":5432},
        {"name":"b","role":"replica","state":"in archive recovery","host":"10.0.0.2","port":5432},
        {"name":"c","role":"replica","state":"stopped","host":"10.0.0.3","port":5432},
        {"name":"d","role":"standby_leader","state":"running","host":"10.0.0.4","port":5432},
        {"name":"e","role":"replica","state":"streaming","port":5432},
        {"name":"f","role":"replica","state":"streaming","host":"10.0.0.6"}
    ]})";
    std::string err;
    auto d = rt::select_patroni(b, err);
    ASSERT_TRUE(d) << err;
    EXPECT_TRUE(d->primaries.empty());
    EXPECT_EQ(d->replicas, std::vector<HostPort>{hp("10.0.0.6")});  // no host = skipped; no port = 5432
}

TEST(RoutingPatroni, TwoLeadersAreBothCandidates) {
    const char* b = R"({"members":[
        {"name":"a","role":"leader","state":"running","host":"10.0.0.1","port":5432},
        {"name":"b","role":"leader","state":"running","host":"10.0.0.2","port":5432}]})";
    std::string err;
    auto d = rt::select_patroni(b, err);
    ASSERT_TRUE(d) << err;
    EXPECT_EQ(d->primaries.size(), 2u);
}

TEST(RoutingPatroni, EmptyAndBadInput) {
    std::string err;
    auto d = rt::select_patroni(R"({"members":[]})", err);
    ASSERT_TRUE(d) << err;
    EXPECT_TRUE(d->primaries.empty());
    for (const char* bad : {"", "null", "[]", "{}", "{\"members\":{}}", "{\"members\":[1]}",
                            R"({"members":[{"role":1}]})", R"({"members":[{"role":"leader","host":"h","port":"5432"}]})",
                            R"({"members":[{"role":"leader","host":"h","port":99999}]})", "{\"members\":["}) {
        std::string e;
        EXPECT_FALSE(rt::select_patroni(bad, e).has_value()) << bad;
        EXPECT_FALSE(e.empty()) << bad;
    }
}
