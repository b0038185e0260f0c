// The rollout command is a module of its own because it draws with
// gonum/plot (and so golang.org/x/image) and runs the gRPC load: neither
// reaches the services that require lameduck, nor their tests through
// lameducktest, which records a failed rollout for this command to draw.
// It uses only the exported API of the root module, whose
// lameducktest/rolloutcmd is the command's body, and of grpcserver, and
// requires them at released versions; in the repository, go.work uses the
// working tree instead.
module github.com/lameduck/lameduck/cmd/rollout

go 1.24.0

require (
	github.com/lameduck/lameduck v0.1.0
	github.com/lameduck/lameduck/grpcserver v0.1.0
	github.com/stretchr/testify v1.11.1
	go.uber.org/goleak v1.3.0
	golang.org/x/image v0.30.0
	gonum.org/v1/plot v0.17.0
)

require (
	codeberg.org/go-fonts/liberation v0.5.0 // indirect
	codeberg.org/go-latex/latex v0.2.0 // indirect
	codeberg.org/go-pdf/fpdf v0.11.1 // indirect
	git.sr.ht/~sbinet/gg v0.7.0 // indirect
	github.com/ajstarks/svgo v0.0.0-20211024235047-1546f124cd8b // indirect
	github.com/davecgh/go-spew v1.1.1 // indirect
	github.com/golang/freetype v0.0.0-20170609003504-e2365dfdc4a0 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	golang.org/x/net v0.49.0 // indirect
	golang.org/x/sys v0.40.0 // indirect
	golang.org/x/text v0.33.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260120221211-b8f7ae30c516 // indirect
	google.golang.org/grpc v1.80.0 // indirect
	google.golang.org/protobuf v1.36.11 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
