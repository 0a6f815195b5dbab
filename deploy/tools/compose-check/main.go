// compose-check loads compose files with Docker Compose's own loader (compose-go: interpolation from the
// env file, merging of override files, schema validation, normalisation), as `docker compose config --quiet`
// does where the compose plugin is not installed. deploy/check.sh runs it.
//
//	go run ./deploy/tools/compose-check DIR ENV_FILE compose.yaml [override.yaml ...]
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 4 {
		fmt.Fprintln(os.Stderr, "usage: compose-check DIR ENV_FILE FILE...")
		os.Exit(2)
	}
	options, err := cli.NewProjectOptions(os.Args[3:], cli.WithWorkingDirectory(os.Args[1]),
		cli.WithEnvFiles(os.Args[2]), cli.WithDotEnv, cli.WithProfiles([]string{"*"}))
	if err == nil {
		project, loadErr := options.LoadProject(context.Background())
		if err = loadErr; err == nil {
			fmt.Printf("valid: %d services (%v)\n", len(project.Services), project.ServiceNames())
			return
		}
	}
	fmt.Fprintln(os.Stderr, "invalid:", err)
	os.Exit(1)
}
