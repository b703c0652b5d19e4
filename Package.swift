// swift-tools-version: 6.1
import PackageDescription

// Pure modules (TernCore, TernStorage's format, TernConsensus, TernCheck) depend on no clock,
// socket or thread of their own; everything with a clock, a disk or a network is injected so
// that TernSim can run the whole cluster from one seed.
let settings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "Tern",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "tern", targets: ["tern"]),
        .library(name: "TernStorage", targets: ["TernStorage"]),
        .library(name: "TernConsensus", targets: ["TernConsensus"]),
        .library(name: "TernCheck", targets: ["TernCheck"]),
        .library(name: "TernSim", targets: ["TernSim"]),
        .library(name: "TernPlacement", targets: ["TernPlacement"]),
        .library(name: "TernTransport", targets: ["TernTransport"]),
        .library(name: "TernRepair", targets: ["TernRepair"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // TLS for clients and mutual TLS between peers (docs/SECURITY.md); swift-certificates makes
        // `tern dev --tls`'s throwaway CA without openssl.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1", from: "1.7.4"),
    ],
    targets: [
        .target(name: "TernCore", swiftSettings: settings),
        .target(name: "TernStorage", dependencies: ["TernCore"], swiftSettings: settings),
        .target(name: "TernConsensus", dependencies: ["TernCore"], swiftSettings: settings),
        .target(name: "TernCheck", dependencies: ["TernCore"], swiftSettings: settings),
        // seq: the sequence allocator's pure core (SEQ.NEXT), hosted by TernServer and TernSim.
        .target(name: "TernSeq", dependencies: ["TernCore", "TernConsensus"], swiftSettings: settings),
        // repair: the anti-entropy scanner's pure core (digests, exchanges, repair decisions),
        // driven by TernServer's node and by TernSim.
        .target(name: "TernRepair", dependencies: ["TernCore", "TernConsensus"], swiftSettings: settings),
        .target(
            name: "TernPlacement",
            dependencies: ["TernCore", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: settings
        ),
        .target(
            name: "TernSim",
            dependencies: ["TernCore", "TernStorage", "TernConsensus", "TernCheck", "TernSeq", "TernRepair"],
            swiftSettings: settings
        ),
        .target(
            name: "TernTransport",
            dependencies: [
                "TernCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: settings
        ),
        // libFuzzer entry point for the peer-frame decoder; a plain build replays corpus files.
        // scripts/fuzz-frame builds it with -sanitize=fuzzer and -DTERN_LIBFUZZER.
        // The plain mutational fuzzer both fuzz targets use outside libFuzzer (CI runs it).
        .target(name: "TernFuzzMutate", dependencies: ["TernCore"], swiftSettings: settings),
        .executableTarget(
            name: "TernFuzzFrame",
            dependencies: [
                "TernTransport", "TernCore", "TernFuzzMutate",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings
        ),
        // RESP2/RESP3 codec (NIOCore only) and the async client (the one file that uses NIOPosix).
        .target(
            name: "TernRESP",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: settings
        ),
        // Load generator behind `tern bench resp|etcd`: measures, so it reads clocks and sockets.
        .target(
            name: "TernBench",
            dependencies: [
                "TernCore", "TernRESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: settings
        ),
        // libFuzzer entry point for the RESP decoders (scripts/fuzz-resp); a corpus replayer otherwise.
        .executableTarget(
            name: "TernFuzzRESP",
            dependencies: ["TernRESP", "TernFuzzMutate", .product(name: "NIOCore", package: "swift-nio")],
            exclude: ["corpus"],
            swiftSettings: settings
        ),
        // The server process: wires consensus, storage, placement, transport and RESP to real
        // sockets, disks and clocks (NIO event loops; never blocks one).
        .target(
            name: "TernServer",
            dependencies: [
                "TernCore", "TernConsensus", "TernStorage", "TernPlacement", "TernRESP", "TernTransport",
                "TernSeq",  // seq
                "TernRepair",  // anti-entropy
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Crypto", package: "swift-crypto"),  // ACL password hashes
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "tern",
            dependencies: [
                "TernCore", "TernStorage", "TernConsensus", "TernCheck", "TernSim", "TernPlacement",
                "TernTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                "TernBench", "TernServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: settings
        ),
        .testTarget(
            name: "TernStorageTests", dependencies: ["TernStorage", "TernCore"], swiftSettings: settings),
        .testTarget(
            name: "TernConsensusTests", dependencies: ["TernConsensus"], swiftSettings: settings),
        .testTarget(
            name: "TernCheckTests", dependencies: ["TernCheck", "TernCore"], swiftSettings: settings),
        .testTarget(
            name: "TernRepairTests", dependencies: ["TernRepair", "TernConsensus", "TernCore"],
            swiftSettings: settings),
        .testTarget(
            name: "TernPlacementTests", dependencies: ["TernPlacement", "TernCore"], swiftSettings: settings),
        .testTarget(
            name: "TernSimTests",
            dependencies: [
                "TernSim", "TernCheck", "TernConsensus", "TernStorage", "TernSeq", "TernCore", "TernRepair",
            ],
            swiftSettings: settings),
        .testTarget(
            name: "TernTransportTests",
            dependencies: [
                "TernTransport", "TernCore", "TernFuzzFrame",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: settings),
        .testTarget(
            name: "TernRESPTests",
            dependencies: [
                "TernRESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            swiftSettings: settings),
        .testTarget(
            name: "TernBenchTests",
            dependencies: [
                "TernBench", "TernRESP",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: settings),
        .testTarget(
            name: "TernServerTests",
            dependencies: [
                "TernServer", "TernCore", "TernConsensus", "TernStorage", "TernPlacement", "TernCheck",
                "TernRESP", "TernSeq", "TernTransport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings),
    ]
)
