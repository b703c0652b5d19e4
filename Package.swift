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
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    ],
    targets: [
        .target(name: "TernCore", swiftSettings: settings),
        .target(name: "TernStorage", dependencies: ["TernCore"], swiftSettings: settings),
        .target(name: "TernConsensus", dependencies: ["TernCore"], swiftSettings: settings),
        .target(name: "TernCheck", dependencies: ["TernCore"], swiftSettings: settings),
        .target(
            name: "TernPlacement",
            dependencies: ["TernCore", .product(name: "TOMLKit", package: "TOMLKit")],
            swiftSettings: settings
        ),
        .target(
            name: "TernSim",
            dependencies: ["TernCore", "TernStorage", "TernConsensus", "TernCheck"],
            swiftSettings: settings
        ),
        // The server process: wires consensus, storage, placement, transport and RESP to real
        // sockets, disks and clocks (NIO event loops; never blocks one).
        .target(
            name: "TernServer",
            dependencies: [
                "TernCore", "TernConsensus", "TernStorage", "TernPlacement",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "TOMLKit", package: "TOMLKit"),
            ],
            swiftSettings: settings
        ),
        .executableTarget(
            name: "tern",
            dependencies: [
                "TernCore", "TernStorage", "TernConsensus", "TernCheck", "TernSim", "TernPlacement",
                "TernServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: settings
        ),
        .testTarget(name: "TernStorageTests", dependencies: ["TernStorage"], swiftSettings: settings),
        .testTarget(
            name: "TernConsensusTests", dependencies: ["TernConsensus"], swiftSettings: settings),
        .testTarget(name: "TernCheckTests", dependencies: ["TernCheck"], swiftSettings: settings),
        .testTarget(
            name: "TernPlacementTests", dependencies: ["TernPlacement", "TernCore"], swiftSettings: settings),
        .testTarget(
            name: "TernSimTests", dependencies: ["TernSim", "TernCheck", "TernConsensus", "TernStorage"],
            swiftSettings: settings),
        .testTarget(
            name: "TernServerTests",
            dependencies: [
                "TernServer", "TernCore", "TernConsensus", "TernStorage", "TernPlacement", "TernCheck",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: settings),
    ]
)
